"""What a workflow config needs from the Hugging Face hub, item by item: its hub models, the files of its hub text
sources for the parts it reads, the datasets of its lm-eval tasks, and the repositories behind them."""

from typing import Any

from armor.evaluation.task_index import TaskIndex
from armor.pipeline.data import HUB_TEXT


def hub_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configured models read from the hub, by name."""
    return {name: spec for name, spec in config["models"].items() if spec["source"] == "hub"}


def text_parts(config: dict[str, Any]) -> dict[str, list[str]]:
    """The hub text sources the config reads, each with the parts it reads (calibration, evaluation)."""
    parts: dict[str, list[str]] = {}
    if config["calibration"]["source"] in HUB_TEXT:
        parts.setdefault(config["calibration"]["source"], []).append("calibration")
    for dataset in config["evaluation"]["datasets"].values():
        if dataset["source"] in HUB_TEXT and "evaluation" not in parts.get(dataset["source"], []):
            parts.setdefault(dataset["source"], []).append("evaluation")
    return parts


def text_files(source: str, parts: list[str]) -> list[str]:
    """The files of a hub text source that the given parts read."""
    return [file for part in parts for file in HUB_TEXT[source].files[part]]


def harness_tasks(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configured lm-eval harness tasks (not the offline local ones), by label."""
    return {label: spec for label, spec in config["downstream"]["tasks"].items() if "task" in spec}


def repositories(config: dict[str, Any], index: TaskIndex | None) -> list[dict[str, str]]:
    """Every hub repository the config reads, once each: its kind, id and the config key that needs it."""
    found: dict[tuple[str, str], str] = {}
    for name, spec in hub_models(config).items():
        found.setdefault(("model", spec["id"]), f"models.{name}")
    for source in text_parts(config):
        found.setdefault(("dataset", HUB_TEXT[source].repo), f"text source {source}")
    for label, spec in harness_tasks(config).items():
        for path, _ in index.datasets(spec["task"]) if index else []:
            found.setdefault(("dataset", path), f"downstream.tasks.{label}")
    return [{"kind": kind, "repo": repo, "needed_by": key} for (kind, repo), key in found.items()]
