import json
import random

import datasets
import pytest
import torch

from armor.hub.environment import NotInCacheError
from armor.pipeline.data import HUB_TEXT, SOURCES, calibration_windows, document_windows, evaluation_windows, source_text, text_rows
from armor.pipeline.models import load_tokenizer


def test_offline_sources_split_by_article_without_overlap():
    for source in ("gensim_wiki", "gensim_news"):
        calibration = set(SOURCES[source].documents("calibration"))
        evaluation = set(SOURCES[source].documents("evaluation"))
        assert calibration and evaluation
        assert not calibration & evaluation


def test_calibration_windows_are_seeded(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    a = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=0)
    b = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=0)
    c = calibration_windows(tok, "gensim_news", nsamples=6, seqlen=32, seed=1)
    assert a.shape == (6, 32) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_evaluation_windows_are_consecutive_and_capped(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    full = evaluation_windows(tok, "gensim_news", seqlen=128)
    capped = evaluation_windows(tok, "gensim_news", seqlen=128, max_windows=3)
    tokens = torch.tensor(tok(source_text("gensim_news", "evaluation"))["input_ids"])
    assert full.shape[0] == tokens.numel() // 128
    assert torch.equal(full.flatten(), tokens[: full.numel()])
    assert torch.equal(capped, full[:3])


def _reference_c4_windows(tok, documents: list[str], nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """The SparseGPT/Wanda C4 loader's loop, written out plainly: module-level random, one document per window."""
    random.seed(seed)
    windows = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(documents) - 1)
            ids = tok(documents[i], return_tensors="pt").input_ids
            if ids.shape[1] > seqlen:
                break
        i = random.randint(0, ids.shape[1] - seqlen - 1)
        windows.append(ids[:, i : i + seqlen])
    return torch.cat(windows)


def test_document_corpus_windows_lie_inside_one_document_as_the_reference_loader(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    articles = list(SOURCES["gensim_news"].documents("calibration"))[:40]
    corpus = tmp_path / "c4-train.00000-of-01024.json"  # the C4 format: one JSON object per line
    corpus.write_text("".join(json.dumps({"text": a, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"}) + "\n"
                              for i, a in enumerate(articles)))
    documents = datasets.load_dataset("json", data_files=str(corpus), split="train")["text"]
    windows = document_windows(tok, documents, nsamples=12, seqlen=64, seed=3)
    assert torch.equal(windows, _reference_c4_windows(tok, documents, 12, 64, 3))
    encoded = [tok(d)["input_ids"] for d in documents]
    for window in windows.tolist():
        assert any(len(ids) > 64 and any(ids[s : s + 64] == window for s in range(len(ids) - 64)) for ids in encoded)
    assert not torch.equal(windows, document_windows(tok, documents, nsamples=12, seqlen=64, seed=4))
    with pytest.raises(ValueError, match="no document of more than seqlen=100000 tokens"):
        document_windows(tok, documents, nsamples=1, seqlen=100000, seed=0)
    assert SOURCES["c4"].pool == 0 and SOURCES["gensim_wiki"].pool is None  # C4 draws inside documents; the offline sources keep their split


def test_hub_text_files_read_as_the_datasets_library_reads_them(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"text": t, "url": f"u{i}"} for i, t in enumerate(["First line.", "", " = Heading = ", "Ünïcode — text\nwith a break", "last"])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train-00000-of-00001.parquet")
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    (tmp_path / "c4-train.00000-of-01024.json.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "example_train_0.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    for name, builder in [("train-00000-of-00001.parquet", "parquet"), ("c4-train.00000-of-01024.json.gz", "json"), ("example_train_0.jsonl.zst", "json")]:
        expected = datasets.load_dataset(builder, data_files=str(tmp_path / name), split="train", cache_dir=str(tmp_path / "cache"))["text"]
        assert list(text_rows(tmp_path / name)) == expected == [r["text"] for r in rows], name


def test_hub_text_source_missing_from_the_cache_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(NotInCacheError, match=r"wikitext-2-raw-v1/test-00000-of-00001.parquet of the dataset repository Salesforce/wikitext is not in the Hugging Face cache"):
        source_text("wikitext2", "evaluation")
    assert HUB_TEXT["c4"].files == {"calibration": ["en/c4-train.00000-of-01024.json.gz"], "evaluation": ["en/c4-validation.00000-of-00008.json.gz"]}
