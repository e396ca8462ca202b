"""Downstream accuracy with the lm-evaluation-harness: offline multiple-choice tasks and hub tasks."""

import json
import logging
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from armor.evaluation.task_index import load_index, metric_key
from armor.hub.environment import NotInCacheError, offline
from armor.pipeline.checkpoint import atomic_dir, atomic_write_json
from armor.pipeline.data import source_text
from armor.pipeline.models import package_file
from armor.pipeline.runs import pruned_model

log = logging.getLogger(__name__)

CHOICES = 4
LOADER = Path(__file__).with_name("lm_task_loader.py")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
PLAIN = re.compile(r"[A-Za-z0-9 ,;'()\-]+[.]")  # one sentence of plain prose, no leftover markup


def _sentences(text: str, min_words: int, max_words: int) -> Iterator[str]:
    """The plain-prose sentences of min_words to max_words words in a newline-separated text."""
    for paragraph in text.split("\n"):
        for sentence in SENTENCE.split(paragraph.strip()):
            if PLAIN.fullmatch(sentence) and min_words <= len(sentence.split()) <= max_words:
                yield sentence


def _choice_doc(context: str, answer: str, distractors: list[str], rng: random.Random) -> dict[str, Any]:
    """One multiple-choice document with the answer at a random position."""
    choices = [*distractors, answer]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(answer)}


def _pick_distractors(pool: list[str], answer: str, rng: random.Random) -> list[str]:
    """CHOICES - 1 distinct entries of pool that differ from answer."""
    picked: list[str] = []
    while len(picked) < CHOICES - 1:
        candidate = rng.choice(pool)
        if candidate.lower() != answer.lower() and candidate not in picked:
            picked.append(candidate)
    return picked


def analogy_docs(items: int, seed: int) -> list[dict[str, Any]]:
    """Word analogies from gensim's questions-words.txt: 'A is to B as C is to' -> D among words of its section."""
    sections: dict[str, list[list[str]]] = {}
    name = ""
    for line in package_file("gensim", "test/test_data/questions-words.txt").read_text().splitlines():
        if line.startswith(":"):
            name = line[1:].strip()
        elif line.strip():
            sections.setdefault(name, []).append(line.split())
    rng = random.Random(seed)
    per_section = -(-items // len(sections))
    docs = []
    for rows in sections.values():
        answers = sorted({row[3] for row in rows})
        for a, b, c, d in rng.sample(rows, min(per_section, len(rows))):
            docs.append(_choice_doc(f"{a} is to {b} as {c} is to", d, _pick_distractors(answers, d, rng), rng))
    rng.shuffle(docs)
    return docs[:items]


def _cloze_docs(source: str, items: int, seed: int) -> list[dict[str, Any]]:
    """Last-word cloze on held-out sentences of a text source; distractors are other sentences' last words."""
    split = [s.rstrip(".").rsplit(" ", 1) for s in _sentences(source_text(source, "evaluation"), 8, 24)]
    usable = [(context, word) for context, word in split if word.isalpha() and len(word) > 2]
    pool = list(dict.fromkeys(word for _, word in usable))
    rng = random.Random(seed)
    chosen = rng.sample(usable, min(items, len(usable)))
    return [_choice_doc(context, word, _pick_distractors(pool, word, rng), rng) for context, word in chosen]


def wiki_cloze_docs(items: int, seed: int) -> list[dict[str, Any]]:
    """Last word of held-out Wikipedia sentences (gensim's dump)."""
    return _cloze_docs("gensim_wiki", items, seed)


def news_cloze_docs(items: int, seed: int) -> list[dict[str, Any]]:
    """Last word of held-out news sentences (gensim's Lee corpus)."""
    return _cloze_docs("gensim_news", items, seed)


LOCAL_TASKS: dict[str, Callable[[int, int], list[dict[str, Any]]]] = {
    "analogy": analogy_docs,
    "wiki_cloze": wiki_cloze_docs,
    "news_cloze": news_cloze_docs,
}

TASK_YAML = """\
task: armor_{name}
custom_dataset: !function loader.load
dataset_kwargs:
  file: {name}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_local_tasks(names: list[str], out_dir: Path, items: int, seed: int) -> None:
    """Write each local task as JSONL plus an lm-eval YAML and the loader beside them, all at once."""
    unknown = sorted(set(names) - set(LOCAL_TASKS))
    if unknown:
        raise ValueError(f"unknown local task(s) {unknown}; allowed: {sorted(LOCAL_TASKS)}")
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(LOADER, tmp / "loader.py")
        for name in names:
            docs = LOCAL_TASKS[name](items, seed)
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
            (tmp / f"{name}.yaml").write_text(TASK_YAML.format(name=name))
            log.info("task %s: %d items", name, len(docs))


def task_name(spec: dict[str, Any]) -> str:
    """The lm-eval task name of one configured task: a hub task's own name, or armor_<local name>."""
    return spec["task"] if "task" in spec else f"armor_{spec['local']}"


def task_manager(tasks: dict[str, dict[str, Any]], task_dir: Path | None) -> Any:
    """An lm-eval TaskManager for the configured tasks: the offline tasks' folder and, of the harness's own tasks, only
    the folders of the configured ones (indexing all of them takes seconds)."""
    from lm_eval.tasks import TaskManager

    harness = [spec["task"] for spec in tasks.values() if "task" in spec]
    folders = ([task_dir] if task_dir else []) + (load_index().folders(harness) if harness else [])
    return TaskManager(include_path=[str(f) for f in folders] or None, include_defaults=False)


def _missing_dataset(label: str, spec: dict[str, Any], error: Exception) -> Exception:
    """Offline, the dataset of a configured harness task that the Hugging Face cache lacks, as NotInCacheError; the
    original error where each of its datasets loads."""
    import datasets

    index = load_index()
    for leaf in index.leaves(spec["task"]):
        (path, config), kwargs = index.entries[leaf]["dataset"], index.entries[leaf]["dataset_kwargs"]
        if not path:
            continue
        try:
            datasets.load_dataset(path, config, **{k: v for k, v in kwargs.items() if k != "trust_remote_code"})
        except Exception:  # the datasets library's offline errors vary by version
            named = f"config {config} of " if config else ""
            return NotInCacheError(f"the dataset {named}{path} (lm-eval task {leaf}, downstream.tasks.{label})")
    return error


def load_tasks(tasks: dict[str, dict[str, Any]], task_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """lm-eval's TaskManager and every configured task built by it, its datasets read (offline: from the cache), by
    label: what a job evaluates, and what the prefetch runs where the network is."""
    manager = task_manager(tasks, task_dir)
    loaded = {}
    for label, spec in tasks.items():
        name = task_name(spec)
        try:
            built = manager.load([name])
        except Exception as err:
            raise (_missing_dataset(label, spec, err) if offline() and "task" in spec else err) from err
        loaded[label] = built["groups"].get(name) or built["tasks"][name]
    return manager, loaded


def evaluate(model: Any, tokenizer: Any, tasks: dict[str, dict[str, Any]], built: tuple[Any, dict[str, Any]], batch_size: int, device: str) -> dict[str, dict[str, float]]:
    """Score one in-memory model on every configured task, as `load_tasks` built them: {label: {score, stderr}}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    manager, loaded = built
    scores = {}
    for label, spec in tasks.items():
        name, key = task_name(spec), metric_key(spec["metric"])
        log.info("task %s (%s, %d-shot)", label, name, spec["num_fewshot"])
        out = simple_evaluate(
            model=lm, tasks=[loaded[label]], num_fewshot=spec["num_fewshot"], limit=spec.get("limit"),
            task_manager=manager, log_samples=False, bootstrap_iters=1000,
        )
        result = out["results"][name]
        if key not in result:
            raise KeyError(f"task {label}: lm-eval reported no metric {key!r}; it reported {sorted(k for k in result if ',' in k)}")
        metric, filt = key.split(",", 1)
        stderr = result.get(f"{metric}_stderr,{filt}")
        scores[label] = {"score": float(result[key]), "stderr": float(stderr) if isinstance(stderr, float) else float("nan")}
        log.info("task %s: %s = %.4f", label, key, scores[label]["score"])
    return scores


def evaluate_downstream(
    model_dir: Path, dtype: str, pruned: Path, tasks: dict[str, dict[str, Any]], task_dir: Path | None, out: Path,
    device: str = "auto", batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """lm-eval scores of a pruned run on every configured task, written to out as JSON; the tasks' data is read
    before the model, so a dataset missing from the cache stops the job within seconds."""
    built = load_tasks(tasks, task_dir)
    model, tokenizer, dev = pruned_model(model_dir, dtype, pruned, device)
    scores = evaluate(model, tokenizer, tasks, built, batch_size, str(dev))
    atomic_write_json(out, scores)
    return scores
