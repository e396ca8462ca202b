"""Perplexity over non-overlapping token windows: exp of the mean next-token NLL."""

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from armor.pipeline.checkpoint import atomic_write_json
from armor.pipeline.data import load_windows
from armor.pipeline.runs import apply_run, pruned_model

log = logging.getLogger(__name__)


def perplexity(model: PreTrainedModel, windows: Tensor, batch_size: int = 1, device: torch.device = torch.device("cpu")) -> float:
    """exp(mean NLL) over every predicted token of every window (n, seqlen)."""
    total_nll, total_tokens = 0.0, 0
    n = windows.shape[0]
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(batch, use_cache=False).logits[:, :-1].float()  # (b, seqlen-1, vocab)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total_nll += float(nll)
            total_tokens += batch[:, 1:].numel()
            log.info("perplexity: %d/%d windows, running ppl %.3f", min(start + batch_size, n), n, math.exp(total_nll / total_tokens))
    return math.exp(total_nll / total_tokens)


def input_device(model: PreTrainedModel) -> torch.device:
    """Where a (possibly multi-GPU) model takes its input ids: the embedding's device."""
    return model.get_input_embeddings().weight.device


def evaluate_run(model_dir: Path, dtype: str, pruned: Path, windows: dict[str, Path], out: Path, device: str = "auto", batch_size: int = 1) -> dict[str, float]:
    """Perplexity of a pruned run on each evaluation set, written to out as JSON."""
    model, _, _ = pruned_model(model_dir, dtype, pruned, device)
    result = {}
    for name, path in windows.items():
        result[name] = perplexity(model, load_windows(path), batch_size=batch_size, device=input_device(model))
        log.info("%s perplexity: %.3f", name, result[name])
    atomic_write_json(out, result)
    return result


def evaluate_snapshots(
    model_dir: Path, dtype: str, pruned: Path, windows: Path, iterations: list[int], out: Path, device: str = "auto", batch_size: int = 1
) -> dict[int, float]:
    """Perplexity of an ARMOR run's snapshot at each iteration on one evaluation set, written to out as JSON."""
    model, _, _ = pruned_model(model_dir, dtype, pruned, device)
    tokens = load_windows(windows)
    result = {}
    for it in iterations:
        apply_run(model, pruned, snapshot=it)
        result[it] = perplexity(model, tokens, batch_size=batch_size, device=input_device(model))
        log.info("iteration %d perplexity: %.3f", it, result[it])
    atomic_write_json(out, result)
    return result
