"""A run's pruned weights applied to its model, one block file at a time."""

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from armor.pipeline.assemble import run_files
from armor.pipeline.blocks import WeightFiles
from armor.pipeline.models import apply_weights, load_model


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; 'cuda' without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was configured but no CUDA GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def pruned_weights(tensors: dict[str, Tensor], snapshot: int | None = None) -> dict[str, Tensor]:
    """The reconstructed weights among a block file's tensors by parameter name; with snapshot=k, ARMOR's at iteration k.

    A layer whose optimisation stopped early has no snapshot past its last iteration: its final weight stands in.
    """
    weights = {k: v for k, v in tensors.items() if k.endswith(".weight")}
    if snapshot is None:
        return weights
    if weights and not any(k.endswith(f".snapshot_{snapshot}") for k in tensors):
        raise KeyError(f"the run holds no snapshot at iteration {snapshot}; set armor.snapshots in the config and prune again")
    return {k: tensors.get(f"{k.removesuffix('.weight')}.snapshot_{snapshot}", v) for k, v in weights.items()}


def block_weights(run: WeightFiles, prefix: str, device: torch.device, snapshot: int | None = None) -> dict[str, Tensor]:
    """The reconstructed weights (or snapshot) of one decoder block of a run (parameter names under `prefix`), read alone."""
    suffixes = (".weight",) if snapshot is None else (".weight", f".snapshot_{snapshot}")
    names = [n for n in run.names() if n.startswith(prefix) and n.endswith(suffixes)]
    return pruned_weights(run.load(names, None, device), snapshot)


def block_tensors(pruned_dir: Path) -> Iterator[dict[str, Tensor]]:
    """Every tensor of a run, one decoder block's file at a time."""
    for file in run_files(pruned_dir):
        yield load_file(file)


def apply_run(model: PreTrainedModel, pruned_dir: Path, snapshot: int | None = None) -> None:
    """Overwrite the model's decoder linears with a run's pruned weights (or its snapshot), block by block."""
    for tensors in block_tensors(pruned_dir):
        apply_weights(model, pruned_weights(tensors, snapshot))


def pruned_model(model_dir: Path, dtype: str, pruned_dir: Path, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]:
    """The fetched model with a run's pruned weights, on the resolved device (spread over every visible GPU on CUDA)."""
    dev = resolve_device(device)
    model, tokenizer = load_model(model_dir, dtype, dev)
    apply_run(model, pruned_dir)
    return model, tokenizer, dev
