"""Shared fixtures: the tiny random Llama from tests/data/tiny.yaml, fetched once per session; one thread per
pytest-xdist worker, and the longest test files first."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from armor.config import validate
from armor.pipeline.models import fetch_model

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "data" / "tiny.yaml"
LONGEST_FIRST = ("test_slurm.py", "test_workflow.py", "test_hub.py", "test_packed.py")  # minutes each in CI, the SLURM test mostly waiting


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one thread per worker (and OMP_NUM_THREADS=1 for the processes it starts; workflow jobs set
    theirs from Snakemake's threads): `make test`'s three workers share 2 cores, and oversubscribed threads slow small
    tensor operations many times over."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest test files first, so that `make test` (`--dist loadfile --no-loadscope-reorder`) starts
    them first and the short files fill the workers around them."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    """The validated tiny test configuration."""
    return validate(yaml.safe_load(TINY_CONFIG.read_text()))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config: dict) -> Path:
    """A fetched tiny random Llama (3 blocks, hidden 64) with the SmolLM2 tokenizer."""
    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    fetch_model(tiny_config["models"]["tiny-llama"], out)
    return out
