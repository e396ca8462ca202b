"""Atomic, checksummed safetensors files: what a killed job leaves is never loaded."""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside out_dir that replaces out_dir only if the block finishes without error.

    Temporary folders a killed writer of out_dir left behind are removed first.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*"):
        log.info("removing %s, left by a killed writer", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        yield tmp
        tmp.chmod(default_mode(directory=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write an object as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> None:
    """Save tensors and JSON metadata atomically, with a `.sha256` sidecar written last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata={"meta": json.dumps(meta or {})})
        digest = file_sha256(Path(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except OSError as err:
        os.unlink(tmp)
        raise OSError(err.errno, f"could not write {path} ({err.strerror or err}); files written before it are intact") from err
    except BaseException:
        os.unlink(tmp)
        raise
    atomic_write_text(path.with_name(path.name + ".sha256"), digest + "\n")


def verify(path: Path) -> None:
    """Check a file saved by `save_tensors` against its checksum sidecar; ValueError if it fails."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists() or sidecar.read_text().strip() != file_sha256(path):
        raise ValueError(f"checksum mismatch or missing checksum for {path}")


def read_meta(path: Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file written by `save_tensors`, without loading its tensors."""
    with safe_open(path, framework="pt") as f:
        return json.loads((f.metadata() or {}).get("meta", "{}"))


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load tensors and metadata saved by `save_tensors`; ValueError if the checksum fails."""
    verify(path)
    return load_file(path), read_meta(path)


def load_if_valid(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """Load a checkpoint if present and intact; a damaged one is deleted and None returned."""
    if not path.exists():
        return None
    try:
        return load_tensors(path)
    except Exception as err:  # a truncated file fails in safetensors, a changed one on the checksum
        log.warning("discarding damaged checkpoint %s (%s); it will be recomputed", path, err)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        return None


def move_tensors(src: Path, dst: Path) -> None:
    """Move a file written by `save_tensors` and its checksum sidecar."""
    src.rename(dst)
    src.with_name(src.name + ".sha256").rename(dst.with_name(dst.name + ".sha256"))
