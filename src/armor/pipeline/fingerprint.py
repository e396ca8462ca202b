"""Fingerprints of resumable artefacts: the settings that determine a file, kept in its metadata with their digest.

A rerun keeps a finished block only when the settings it would be computed from now have the same digest as the ones
it was computed from; `Resumption` counts what was kept and discarded and logs why.
"""

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from armor.pipeline.checkpoint import atomic_write_json, file_sha256, load_if_valid

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # raised when a block file's layout or meaning changes
IDENTITY_FILE = "model_identity.json"


def digest(settings: Any) -> str:
    """The SHA-256 of a JSON-serialisable value with sorted keys, as 16 hex digits."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def tensor_digest(tensor: Tensor) -> str:
    """The digest of a tensor's dtype, shape and values (e.g. the calibration windows)."""
    values = hashlib.sha256(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()
    return digest([str(tensor.dtype), list(tensor.shape), values])


def write_model_identity(folder: Path, known: dict[str, str] | None = None) -> None:
    """Record a content digest of every file of a fetched model, so later jobs identify it without reading its weights:
    the SHA-256 of each file, or the digest `known` gives for it (the Hugging Face cache names blobs by content)."""
    known = known or {}
    digests = {p.name: known.get(p.name) or file_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != IDENTITY_FILE}
    atomic_write_json(Path(folder) / IDENTITY_FILE, digests)


def model_identity(folder: Path) -> str:
    """The digest of a model folder's files: from the record written at fetch time, or computed where there is none."""
    record = Path(folder) / IDENTITY_FILE
    if record.is_file():
        return digest(json.loads(record.read_text()))
    return digest({p.name: file_sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != IDENTITY_FILE})


def changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings that differ between two fingerprinted setting sets, as `key: old -> new`."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


class Resumption:
    """Loads a job's finished blocks when their settings match this run's, and logs what was kept and discarded."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.kept = 0
        self.discarded: Counter[str] = Counter()

    def load(self, path: Path, settings: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The finished block at `path` if it is intact and was made with `settings`; otherwise None (and it is deleted)."""
        existed = path.exists()
        loaded = load_if_valid(path)
        if loaded is None:
            if existed:
                self.discarded["damaged"] += 1
            return None
        recorded = loaded[1].get("settings")
        if recorded is None or digest(recorded) != digest(settings):
            why = "; ".join(changed(recorded, settings)) if recorded is not None else "no fingerprint (an older format)"
            log.warning("%s: discarding %s, made with other settings (%s)", self.what, path.name, why)
            self.discarded["settings changed"] += 1
            path.unlink()
            path.with_name(path.name + ".sha256").unlink(missing_ok=True)
            return None
        self.kept += 1
        return loaded

    def report(self) -> None:
        """One log line: how many finished blocks were kept and how many discarded, by reason."""
        if self.kept or self.discarded:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.discarded.items())) or "none"
            log.info("%s resumed: kept %d finished block(s), discarded %d (%s)", self.what, self.kept, sum(self.discarded.values()), reasons)


def fingerprinted(settings: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """A block file's metadata with its settings and their digest."""
    return {**meta, "settings": settings, "fingerprint": digest(settings)}
