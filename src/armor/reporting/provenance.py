"""What produced a workflow's results: the code's git commit (and whether it had uncommitted changes), the effective
config's hash, the library versions, the device and the container image. Written to results/provenance.json,
footnoted under every rendered table, and its commit, dirty flag and config hash are the last columns of every table CSV."""

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from armor.pipeline.checkpoint import atomic_write_json
from armor.pipeline.fingerprint import digest

IMAGE_ENV = "ARMOR_IMAGE_DIGEST"  # the image's digest, where the container runtime passes it in
IMAGE_FILE = Path("/etc/armor-image.json")  # the image's own record, written by containers/Containerfile
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


def _version(library: str) -> str:
    """An installed library's version, or "missing"."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def device_name(device: torch.device) -> str:
    """The hardware a run computed on: the GPUs' name and count, or the CPU's model and core count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def image() -> str:
    """The container image this process runs in: its digest where passed in (IMAGE_ENV), else its own record's name
    and source commit, else "host"."""
    if digest_env := os.environ.get(IMAGE_ENV):
        return digest_env
    if IMAGE_FILE.exists():
        record = json.loads(IMAGE_FILE.read_text())
        return f"{record['name']} from {record['source_commit'][:12]}"
    return "host"


def software() -> dict[str, str]:
    """The software a step runs in: the image (or host), torch and transformers."""
    return {"image": image(), "torch": torch.__version__, "transformers": _version("transformers")}


def write_provenance(path: Path, state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Write results/provenance.json: the code state, library versions, Python, device and image; returns it."""
    record = {**state, **{library: _version(library) for library in LIBRARIES}, "python": platform.python_version(),
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
