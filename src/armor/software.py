"""What a step runs in: the container image (or the host), library versions and the device. Every stage records it
(job logs, run summaries, speed rows, the provenance of the tables), so it lives below them all. It imports no torch:
the table and figure jobs log it too, and torch's import is most of their start-up."""

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

IMAGE_ENV = "ARMOR_IMAGE_DIGEST"  # the image's digest, where the container runtime passes it in
IMAGE_FILE = Path("/etc/armor-image.json")  # the image's own record, written by containers/Containerfile


def version(library: str) -> str:
    """An installed library's version, or "missing"."""
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def device_name(device: "torch.device") -> str:
    """The hardware a run computed on: the GPUs' name and count, or the CPU's model and core count."""
    if device.type == "cuda":
        import torch

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
    return {"image": image(), "torch": version("torch"), "transformers": version("transformers")}
