"""Text sources, calibration windows and evaluation windows: one code path for every source."""

import bz2
import gzip
import io
import itertools
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from armor.hub.cache import cached_file
from armor.pipeline.checkpoint import load_tensors, save_tensors
from armor.pipeline.models import package_file

log = logging.getLogger(__name__)

PARTS = ("calibration", "evaluation")
EVAL_EVERY = 5  # offline sources: every 5th article is held out for evaluation
CHARS_PER_CALIBRATION_TOKEN = 20  # calibration text read: at most this many chars per token drawn
MAX_DRAWS_PER_WINDOW = 1000  # document sources: draws allowed per window before the documents are called too short


@dataclass(frozen=True)
class Source:
    """A text source: its documents per part, the separator that joins them, and how calibration windows are drawn.

    Document corpora (`pool` set) draw each calibration window inside one document longer than the window, as the
    SparseGPT/Wanda C4 loader does, from the first `pool` documents (0: all); the others cut windows from the joined text.
    """

    documents: Callable[[str], Iterator[str]]
    joiner: str
    pool: int | None = None


def _held_out(articles: Iterator[str], part: str) -> Iterator[str]:
    """Split distinct articles deterministically: every EVAL_EVERY-th is evaluation, the rest calibration."""
    unique = dict.fromkeys(articles)  # the news corpus repeats some articles; keep the first of each
    for i, text in enumerate(unique):
        if (i % EVAL_EVERY == EVAL_EVERY - 1) == (part == "evaluation"):
            yield text


def _gensim_wiki_articles() -> Iterator[str]:
    """The prose of every non-redirect article of the Wikipedia dump in the gensim wheel."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = package_file("gensim", "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(path) as dump:
        for _title, text, _pageid in extract_pages(dump):
            if text and not text.lstrip().lower().startswith("#redirect"):
                prose = re.sub(r"'{2,}", "", filter_wiki(text)).strip()  # drop bold/italic quotes
                if prose:
                    yield prose


def _gensim_news_articles() -> Iterator[str]:
    """The articles of the Lee news corpus in the gensim wheel, one per line."""
    path = package_file("gensim", "test/test_data/lee_background.cor")
    with open(path, encoding="utf-8", errors="replace") as f:
        yield from (line.strip() for line in f if line.strip())


@dataclass(frozen=True)
class HubText:
    """Text kept as files of a hub dataset repository: the files of each part, read from the Hugging Face cache."""

    repo: str
    files: dict[str, list[str]]  # part -> files in the repository


HUB_TEXT = {
    # WikiText-2 raw: the train split for calibration, test for evaluation (the canonical repository's parquet files)
    "wikitext2": HubText("Salesforce/wikitext", {"calibration": ["wikitext-2-raw-v1/train-00000-of-00001.parquet"],
                                                 "evaluation": ["wikitext-2-raw-v1/test-00000-of-00001.parquet"]}),
    # C4 as the SparseGPT/Wanda loaders read it: the first en train shard, and the first validation shard
    "c4": HubText("allenai/c4", {"calibration": ["en/c4-train.00000-of-01024.json.gz"],
                                 "evaluation": ["en/c4-validation.00000-of-00008.json.gz"]}),
    # SlimPajama (ARMOR's official calibration set): the first train file, and the first test file
    "slimpajama": HubText("cerebras/SlimPajama-627B", {"calibration": ["train/chunk1/example_train_0.jsonl.zst"],
                                                       "evaluation": ["test/chunk1/example_holdout_0.jsonl.zst"]}),
}
C4_EVAL_DOCS = 1100  # the C4 evaluation text: the first 1,100 validation documents, as the GPTQ/SparseGPT loader


def text_rows(path: Path) -> Iterator[str]:
    """The `text` field of every row of a parquet, gzipped JSON-lines or zstd JSON-lines file, in order."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path, columns=["text"]).column("text").to_pylist()
        return
    if path.name.endswith(".gz"):
        stream = gzip.open(path, "rt", encoding="utf-8")
    else:
        import zstandard

        stream = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    with stream:
        yield from (json.loads(line)["text"] for line in stream if line.strip())


def hub_documents(source: str, part: str) -> Iterator[str]:
    """The documents of one part of a hub text source, read offline from the Hugging Face cache."""
    text = HUB_TEXT[source]
    for file in text.files[part]:
        yield from text_rows(cached_file(text.repo, file, repo_type="dataset"))


def _c4(part: str) -> Iterator[str]:
    """C4 documents: the whole first train shard for calibration, the first C4_EVAL_DOCS validation ones for evaluation."""
    docs = hub_documents("c4", part)
    yield from (itertools.islice(docs, C4_EVAL_DOCS) if part == "evaluation" else docs)


SOURCES: dict[str, Source] = {
    "gensim_wiki": Source(lambda part: _held_out(_gensim_wiki_articles(), part), "\n\n"),
    "gensim_news": Source(lambda part: _held_out(_gensim_news_articles(), part), "\n\n"),
    "wikitext2": Source(lambda part: hub_documents("wikitext2", part), "\n\n"),
    "c4": Source(_c4, " ", pool=0),  # windows drawn inside the documents of the whole first train shard, as the reference loader
    "slimpajama": Source(lambda part: hub_documents("slimpajama", part), "\n\n", pool=0),  # the first train file's documents
}


def source_text(name: str, part: str, max_chars: int | None = None) -> str:
    """The documents of one part of a source joined into one text, cut after max_chars."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    source = SOURCES[name]
    pieces, total = [], 0
    for doc in source.documents(part):
        pieces.append(doc)
        total += len(doc) + len(source.joiner)
        if max_chars is not None and total >= max_chars:
            break
    return source.joiner.join(pieces)


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> Tensor:
    """Token ids of a long text as a 1-D int64 tensor."""
    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)


def document_windows(tokenizer: PreTrainedTokenizerBase, documents: list[str], nsamples: int, seqlen: int, seed: int) -> Tensor:
    """`nsamples` windows of `seqlen` tokens, each inside one document: as the SparseGPT/Wanda C4 loader, draw a
    document until one has more than `seqlen` tokens, then a start inside it (Python's `random` seeded with `seed`)."""
    rng = random.Random(seed)
    windows = []
    for _ in range(nsamples):
        for _draw in range(MAX_DRAWS_PER_WINDOW):
            tokens = _tokenize(tokenizer, documents[rng.randint(0, len(documents) - 1)])
            if tokens.numel() > seqlen:
                break
        else:
            raise ValueError(f"no document of more than seqlen={seqlen} tokens in {MAX_DRAWS_PER_WINDOW} draws from {len(documents)} documents")
        start = rng.randint(0, tokens.numel() - seqlen - 1)
        windows.append(tokens[start : start + seqlen])
    return torch.stack(windows)  # (nsamples, seqlen)


def calibration_windows(
    tokenizer: PreTrainedTokenizerBase, source: str, nsamples: int, seqlen: int, seed: int
) -> Tensor:
    """`nsamples` windows of `seqlen` tokens: inside documents for document corpora, else at seeded random offsets in
    the joined calibration text."""
    pool = SOURCES[source].pool
    if pool is not None:
        documents = SOURCES[source].documents("calibration")
        documents = list(documents) if pool == 0 else [doc for _, doc in zip(range(pool), documents)]
        log.info("calibration: %d windows of %d tokens inside documents of %s (%d documents)", nsamples, seqlen, source, len(documents))
        return document_windows(tokenizer, documents, nsamples, seqlen, seed)
    text = source_text(source, "calibration", max_chars=CHARS_PER_CALIBRATION_TOKEN * nsamples * seqlen)
    tokens = _tokenize(tokenizer, text)
    if tokens.numel() < seqlen:
        raise ValueError(f"calibration source {source!r} has {tokens.numel()} tokens, fewer than seqlen={seqlen}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seqlen + 1, (nsamples,), generator=generator)
    log.info("calibration: %d windows of %d tokens from %d tokens of %s", nsamples, seqlen, tokens.numel(), source)
    return torch.stack([tokens[s : s + seqlen] for s in starts.tolist()])  # (nsamples, seqlen)


def evaluation_windows(
    tokenizer: PreTrainedTokenizerBase, source: str, seqlen: int, max_windows: int | None = None
) -> Tensor:
    """The evaluation text cut into non-overlapping `seqlen` windows, the remainder dropped."""
    tokens = _tokenize(tokenizer, source_text(source, "evaluation"))
    n = tokens.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"evaluation source {source!r} has {tokens.numel()} tokens, fewer than seqlen={seqlen}")
    log.info("evaluation: %d windows of %d tokens from %d tokens of %s", n, seqlen, tokens.numel(), source)
    return tokens[: n * seqlen].reshape(n, seqlen)


def save_windows(path: Path, windows: Tensor) -> None:
    """Store token windows (n, seqlen) as safetensors, atomically."""
    save_tensors(path, {"input_ids": windows})


def load_windows(path: Path) -> Tensor:
    """Token windows (n, seqlen) saved by `save_windows`."""
    return load_tensors(path)[0]["input_ids"]
