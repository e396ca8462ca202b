"""The installed lm-evaluation-harness's tasks, groups and tags: what a name expands to, the datasets its tasks read
and the metric keys it reports, read from the harness's task YAMLs without loading any data.

Indexing the harness's ~15,000 names takes seconds, so the index is built once per lm-eval installation and kept as
JSON in the user's cache folder (`$XDG_CACHE_HOME/armor-repro`, default `~/.cache/armor-repro`).
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from armor.config import ConfigError, nearest

FORMAT = 2  # raised when the cached index's layout changes
SPLITS = ("training_split", "validation_split", "test_split", "fewshot_split")
DEFAULT_METRICS = {  # lm_eval.api.registry.DEFAULT_METRIC_REGISTRY: a task without metric_list reports these
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
}


def tasks_root() -> Path:
    """The folder of the installed lm-eval's task YAMLs."""
    return Path(importlib.util.find_spec("lm_eval.tasks").submodule_search_locations[0])


def lm_eval_version() -> str:
    """The installed lm-eval's version."""
    return importlib.metadata.version("lm_eval")


def cache_dir() -> Path:
    """Where armor-repro keeps what it derives from installed packages: $XDG_CACHE_HOME/armor-repro."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "armor-repro"


def _as_list(value: Any) -> list:
    """A YAML scalar or list as a list (None: empty)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _leaf(cfg: dict[str, Any], python: bool, folder: str) -> dict[str, Any]:
    """A task's index entry: its folder, its dataset and the metric keys it reports ('metric,filter'; None where Python
    code decides)."""
    metrics = [m["metric"] if isinstance(m, dict) else m for m in _as_list(cfg.get("metric_list"))]
    if not metrics and not python:
        metrics = DEFAULT_METRICS.get(cfg.get("output_type", "generate_until"), [])
    filters = [f["name"] for f in _as_list(cfg.get("filter_list")) if isinstance(f, dict) and "name" in f] or ["none"]
    return {
        "kind": "python_task" if python else "task",
        "folder": folder,
        "dataset": [cfg.get("dataset_path"), cfg.get("dataset_name")],
        "dataset_kwargs": cfg.get("dataset_kwargs") or {},
        "splits": {s: cfg[s] for s in SPLITS if cfg.get(s)},
        "metrics": [f"{m},{f}" for m in metrics for f in filters] if metrics else None,
    }


def _children(cfg: dict[str, Any], entries: dict[str, dict[str, Any]], folder: str) -> list[str]:
    """A group's direct members by name; inline task or group configs become entries of their own."""
    names = []
    for child in _as_list(cfg.get("task")):
        if isinstance(child, dict):
            name = child.get("group") or child.get("task")
            if not isinstance(name, str):
                continue
            if "group" in child:
                entries.setdefault(name, _group(child, entries, folder))
            elif any(k in child for k in ("dataset_path", "metric_list", "filter_list", "class")):
                entries[name] = _leaf(child, "class" in child, folder)
            names.append(name)
        elif isinstance(child, str):
            names.append(child)
    return names


def _group(cfg: dict[str, Any], entries: dict[str, dict[str, Any]], folder: str) -> dict[str, Any]:
    """A group's index entry: its folder, members and the metrics it aggregates ({metric, filters}; filters None =
    those of its tasks)."""
    aggregates = [
        {"metric": a["metric"], "filters": _as_list(a["filter_list"]) if a.get("filter_list") is not None else None}
        for a in _as_list(cfg.get("aggregate_metric_list"))
        if isinstance(a, dict) and "metric" in a
    ]
    return {"kind": "group", "folder": folder, "children": _children(cfg, entries, folder), "aggregates": aggregates}


def build_index() -> dict[str, dict[str, Any]]:
    """Index every task, group and tag of the installed lm-eval from its YAML files (no data is read)."""
    from lm_eval.tasks._index import Kind, TaskIndex

    raw = TaskIndex.build([tasks_root()])
    entries: dict[str, dict[str, Any]] = {}

    def folder(entry: Any) -> str:
        return entry.yaml_path.parent.relative_to(tasks_root()).as_posix()

    for name, entry in raw.items():
        if entry.kind in (Kind.TASK, Kind.PY_TASK):
            entries[name] = _leaf(entry.cfg or {}, entry.kind == Kind.PY_TASK, folder(entry))
    for name, entry in raw.items():
        if entry.kind == Kind.GROUP:
            entries[name] = _group(entry.cfg or {}, entries, folder(entry))
    for name, entry in raw.items():
        if entry.kind == Kind.TAG:
            entries[name] = {"kind": "tag", "children": sorted(entry.tags)}
    return entries


@dataclass(frozen=True)
class TaskIndex:
    """The harness's names, by name: kind (task, python_task, group, tag) and what each holds."""

    version: str
    entries: dict[str, dict[str, Any]]

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def kind(self, name: str) -> str:
        """task, python_task, group or tag."""
        return self.entries[name]["kind"]

    def _under(self, name: str) -> list[str]:
        """A name and every group, tag and task under it, depth first, each once."""
        out: dict[str, None] = {}
        stack = [name]
        while stack:
            current = stack.pop(0)
            if current in out or current not in self.entries:
                continue
            out[current] = None
            stack[:0] = self.entries[current].get("children", [])
        return list(out)

    def leaves(self, name: str) -> list[str]:
        """The tasks a name runs: itself, or every task under a group or tag, in order, each once."""
        return [n for n in self._under(name) if self.entries[n]["kind"] in ("task", "python_task")]

    def folders(self, names: list[str]) -> list[Path]:
        """The task folders holding the YAMLs of these names and everything under them, none inside another: what an
        lm-eval TaskManager needs to index to build them (milliseconds, against seconds for every task)."""
        found = sorted({self.entries[n]["folder"] for name in names for n in self._under(name) if "folder" in self.entries[n]})
        kept = [f for f in found if not any(f.startswith(other + "/") for other in found if other != f)]
        return [tasks_root() / f for f in kept]

    def datasets(self, name: str) -> list[tuple[str, str | None]]:
        """The (hub path, config name) of every dataset the tasks under a name read, each once."""
        pairs = (tuple(self.entries[leaf]["dataset"]) for leaf in self.leaves(name))
        return list(dict.fromkeys(p for p in pairs if p[0]))

    def metric_keys(self, name: str) -> list[str] | None:
        """The result keys ('metric,filter') the harness reports for a name; None where Python code decides."""
        entry = self.entries[name]
        if entry["kind"] in ("task", "python_task"):
            return entry["metrics"]
        if entry["kind"] == "tag":
            return []
        keys = []
        for aggregate in entry["aggregates"]:
            filters = aggregate["filters"]
            if filters is None:
                prefix = aggregate["metric"] + ","
                found = (k for leaf in self.leaves(name) for k in self.entries[leaf]["metrics"] or [] if k.startswith(prefix))
                filters = [k.split(",", 1)[1] for k in found]
            keys += [f"{aggregate['metric']},{f}" for f in filters]
        return list(dict.fromkeys(keys))


def load_index(folder: Path | None = None) -> TaskIndex:
    """The installed lm-eval's index: read from the cache folder, or built and written there."""
    version = lm_eval_version()
    location = str(Path(importlib.util.find_spec("lm_eval").origin).parent)
    key = hashlib.sha256(json.dumps([FORMAT, version, location]).encode()).hexdigest()[:16]
    path = (folder or cache_dir()) / f"lm_eval_tasks-{version}-{key}.json"
    if path.is_file():
        return TaskIndex(version, json.loads(path.read_text()))
    entries = build_index()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)
    return TaskIndex(version, entries)


def metric_key(metric: str) -> str:
    """The result key of a configured metric: 'metric,filter', the filter 'none' when none is named."""
    return metric if "," in metric else f"{metric},none"


def task_problems(label: str, spec: dict[str, Any], index: TaskIndex) -> list[str]:
    """What is wrong with one configured harness task (its name, kind and metric key), as config-key messages."""
    name, where = spec["task"], f"downstream.tasks.{label}"
    lm_eval = f"lm-eval {index.version}"
    if name not in index:
        names = [n for n, e in index.entries.items() if e["kind"] != "tag"]
        return [f"{where}.task: {name!r} is not a task or group of {lm_eval}{nearest(name, names)}"]
    kind = index.kind(name)
    leaves = index.leaves(name)
    if kind == "tag":
        return [f"{where}.task: {name!r} is a tag of {lm_eval}, which reports no score of its own; name one of its "
                f"tasks ({', '.join(leaves[:5])}{', …' if len(leaves) > 5 else ''}) or a group"]
    keys = index.metric_keys(name)
    if keys == [] and kind == "group":
        return [f"{where}.task: group {name!r} of {lm_eval} aggregates no metric, so it reports no score of its own; "
                f"name one of its tasks ({', '.join(leaves[:5])}{', …' if len(leaves) > 5 else ''})"]
    if keys is not None and metric_key(spec["metric"]) not in keys:
        shown = [k.removesuffix(",none") for k in keys]  # as the config names them
        return [f"{where}.metric: {spec['metric']!r} is not a metric of {name} in {lm_eval}, which reports "
                f"{', '.join(shown)}{nearest(spec['metric'], shown)}"]
    return []


def check_tasks(tasks: dict[str, dict[str, Any]], folder: Path | None = None) -> TaskIndex | None:
    """Refuse configured harness tasks that the installed lm-eval lacks or metrics they do not report (ConfigError
    naming each and the nearest valid names); the index, or None when no harness task is configured."""
    harness = {label: spec for label, spec in tasks.items() if "task" in spec}
    if not harness:
        return None
    index = load_index(folder)
    problems = [p for label, spec in harness.items() for p in task_problems(label, spec, index)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return index
