"""What produced a workflow's results: the code's git commit (and whether it had uncommitted changes), the effective
config's hash, the library versions, the device and the container image. Written to results/provenance.json,
footnoted under every rendered table, and its commit, dirty flag and config hash are the last columns of every table CSV."""

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from armor.pipeline.checkpoint import atomic_write_json
from armor.pipeline.fingerprint import digest
from armor.software import device_name, image, version

LIBRARIES = ("torch", "transformers", "lm_eval", "snakemake")
COLUMNS = ("commit", "dirty", "config_hash")  # what every table CSV carries of results/provenance.json


def _git(root: Path, *args: str) -> str | None:
    """A git command's output in `root`, or None where git or the repository is missing."""
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The commit of the code in `root` ("unknown" outside git), whether tracked files differ from it, and the config hash."""
    commit = _git(root, "rev-parse", "HEAD")
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": bool(changes) if commit else None, "config_hash": digest(config)}


def write_provenance(path: Path, state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Write results/provenance.json: the code state, library versions, Python, device and image; returns it."""
    record = {**state, **{library: version(library) for library in LIBRARIES}, "python": platform.python_version(),
              "device": device_name(device), "image": image()}
    atomic_write_json(path, record)
    return record


def commit_label(state: dict[str, Any]) -> str:
    """A code state's commit (12 digits), marked where tracked files differed from it."""
    return state["commit"][:12] + (" (uncommitted changes)" if state["dirty"] else "")


def footnote(record: dict[str, Any]) -> str:
    """One line naming what produced a table: commit (dirty), config hash, versions, device, image."""
    return (f"Provenance: commit {commit_label(record)}, config {record['config_hash']}, torch {record['torch']}, transformers "
            f"{record['transformers']}, lm-eval {record['lm_eval']}, {record['device']}, image {record['image']}.")


def stamped(table: pd.DataFrame, provenance: Path) -> pd.DataFrame:
    """The table with the commit, dirty flag and config hash of a provenance record (results/provenance.json) as its
    last columns."""
    record = json.loads(provenance.read_text())
    return table.drop(columns=list(COLUMNS), errors="ignore").assign(**{column: record[column] for column in COLUMNS})
