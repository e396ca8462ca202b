"""Offline lm-eval tasks: what they hold, and that the real harness loads them from any directory."""

import json
from pathlib import Path

import pytest

from armor.evaluation.downstream import CHOICES, LOCAL_TASKS, task_manager, task_name, write_local_tasks
from armor.evaluation.task_index import metric_key


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every local task written with 40 items."""
    out = tmp_path_factory.mktemp("tasks") / "lm_tasks"
    write_local_tasks(sorted(LOCAL_TASKS), out, items=40, seed=0)
    return out


@pytest.mark.parametrize("name", sorted(LOCAL_TASKS))
def test_local_task_items_are_well_formed(task_dir, name):
    docs = [json.loads(line) for line in (task_dir / f"{name}.jsonl").read_text().splitlines()]
    assert len(docs) == 40
    for doc in docs:
        assert len(doc["choices"]) == CHOICES == len(set(doc["choices"]))
        assert 0 <= doc["label"] < CHOICES and doc["context"]
    assert len({d["label"] for d in docs}) > 1  # the answer's position varies


def test_local_tasks_are_deterministic(tmp_path):
    write_local_tasks(["analogy"], tmp_path / "a", items=10, seed=3)
    write_local_tasks(["analogy"], tmp_path / "b", items=10, seed=3)
    assert (tmp_path / "a/analogy.jsonl").read_text() == (tmp_path / "b/analogy.jsonl").read_text()


def test_unknown_local_task_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown local task\(s\) \['trivia'\]; allowed: \['analogy'"):
        write_local_tasks(["trivia"], tmp_path / "t", items=4, seed=0)
    assert not (tmp_path / "t").exists()


def test_harness_loads_the_tasks_from_another_directory(task_dir, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)
    tasks = TaskManager(include_path=str(task_dir)).load(["armor_analogy", "armor_news_cloze"])["tasks"]
    docs = list(tasks["armor_analogy"].test_docs())
    assert len(docs) == 40 and docs[0]["context"].endswith(" is to")


def test_task_names_and_metric_keys():
    assert task_name({"local": "analogy"}) == "armor_analogy"
    assert task_name({"task": "hellaswag"}) == "hellaswag"
    assert metric_key("acc_norm") == "acc_norm,none"
    assert metric_key("exact_match,strict-match") == "exact_match,strict-match"


def test_task_manager_indexes_only_the_configured_harness_tasks_folders(task_dir):
    local = {"analogy": {"local": "analogy"}, "wiki_cloze": {"local": "wiki_cloze"}}
    assert sorted(task_manager(local, task_dir).all_tasks) == sorted(f"armor_{name}" for name in LOCAL_TASKS)
    mixed = task_manager({**local, "hellaswag": {"task": "hellaswag"}, "mmlu": {"task": "mmlu"}}, task_dir)
    assert {"hellaswag", "armor_analogy", "mmlu", "mmlu_stem", "mmlu_abstract_algebra"} <= set(mixed.all_tasks)
    assert len(mixed.all_tasks) < 200  # not the harness's ~15,000 names
