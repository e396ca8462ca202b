"""Perplexity over non-overlapping token windows: exp of the mean next-token NLL."""

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from armor.pipeline.blocks import BlockRunner, WeightFiles
from armor.pipeline.checkpoint import atomic_write_json
from armor.pipeline.data import load_windows
from armor.pipeline.models import DTYPES
from armor.pipeline.runs import apply_run, block_weights, pruned_model, resolve_device

log = logging.getLogger(__name__)


def _window_nll(logits: Tensor, ids: Tensor) -> Tensor:
    """Each window's summed next-token NLL (b,) in float64, of ids (b, seq) under logits (b, seq, vocab)."""
    logits = logits[:, :-1].float()  # (b, seq-1, vocab)
    targets = ids[:, 1:].to(logits.device)  # (b, seq-1)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape).sum(1).double().cpu()


def ppl_of(nll: Tensor, tokens_per_window: int) -> float:
    """exp(mean NLL per predicted token) from the windows' summed NLLs (n,)."""
    return math.exp(float(nll.sum()) / (nll.numel() * tokens_per_window))


def _collect(batches: Iterator[tuple[Tensor, Tensor]], n: int) -> Tensor:
    """The summed NLL of each of the n windows (n,) that (logits, ids) batches cover, logging progress."""
    parts = []
    for logits, ids in batches:
        parts.append(_window_nll(logits, ids))
        done = torch.cat(parts)
        log.info("perplexity: %d/%d windows, running ppl %.3f", done.numel(), n, ppl_of(done, ids.shape[1] - 1))
    return torch.cat(parts)


def window_nll(model: PreTrainedModel, windows: Tensor, batch_size: int = 1, device: torch.device = torch.device("cpu")) -> Tensor:
    """The summed next-token NLL of every window (n, seqlen): a tensor (n,)."""
    with torch.inference_mode():
        batches = ((model(ids.to(device), use_cache=False).logits, ids) for ids in windows.split(batch_size))
        return _collect(batches, windows.shape[0])


def perplexity(model: PreTrainedModel, windows: Tensor, batch_size: int = 1, device: torch.device = torch.device("cpu")) -> float:
    """exp(mean NLL) over every predicted token of every window (n, seqlen)."""
    return ppl_of(window_nll(model, windows, batch_size, device), windows.shape[1] - 1)


def streamed_window_nll(
    model_dir: Path, dtype: torch.dtype, windows: Tensor, device: torch.device, batch_size: int = 1,
    pruned: Path | None = None, snapshot: int | None = None,
) -> Tensor:
    """window_nll() with only one decoder block in memory at a time, on `device`: the dense block, then a run's pruned
    weights (or its snapshot) over its linears. The hidden states of every window (n, seq, d) stay on `device`."""
    runner = BlockRunner(model_dir, dtype, windows, device, batch_size)
    run = WeightFiles(pruned) if pruned is not None else None
    hidden = runner.hidden
    start = time.perf_counter()
    for index in range(len(runner)):
        given = block_weights(run, f"{runner.prefix}.{index}.", device, snapshot) if run is not None else None
        block = runner.load(index, given)  # the run's linears are not read from the dense model
        runner.run(index, block, hidden, out=hidden)
        runner.release(index)
        log.info("streamed block %d/%d (%.0fs)", index + 1, len(runner), time.perf_counter() - start)
    batches = ((runner.logits(ids, final), ids) for ids, final in zip(windows.split(batch_size), hidden.split(batch_size), strict=True))
    return _collect(batches, windows.shape[0])


def streamed_perplexity(
    model_dir: Path, dtype: torch.dtype, windows: Tensor, device: torch.device, batch_size: int = 1,
    pruned: Path | None = None, snapshot: int | None = None,
) -> float:
    """perplexity() with one decoder block in memory at a time (streamed_window_nll)."""
    return ppl_of(streamed_window_nll(model_dir, dtype, windows, device, batch_size, pruned, snapshot), windows.shape[1] - 1)


def input_device(model: PreTrainedModel) -> torch.device:
    """Where a (possibly multi-GPU) model takes its input ids: the embedding's device."""
    return model.get_input_embeddings().weight.device


def _scorer(model_dir: Path, dtype: str, pruned: Path, device: str, batch_size: int, stream: bool) -> Callable[[Tensor, int | None], Tensor]:
    """Each window's NLL under a run, at its final weights or a snapshot: the whole model loaded once (spread over
    every visible GPU on CUDA), or with `stream` its decoder blocks streamed through one device for each call."""
    if stream:
        dev = resolve_device(device)
        return lambda tokens, snapshot: streamed_window_nll(model_dir, DTYPES[dtype], tokens, dev, batch_size, pruned, snapshot)
    model, _, _ = pruned_model(model_dir, dtype, pruned, device)

    def score(tokens: Tensor, snapshot: int | None) -> Tensor:
        if snapshot is not None:
            apply_run(model, pruned, snapshot=snapshot)
        return window_nll(model, tokens, batch_size=batch_size, device=input_device(model))

    return score


def evaluate_run(
    model_dir: Path, dtype: str, pruned: Path, windows: dict[str, Path], out: Path, device: str = "auto", batch_size: int = 1,
    stream: bool = False, window_out: Path | None = None,
) -> dict[str, float]:
    """Perplexity of a pruned run on each evaluation set, written to out as JSON; with `window_out`, each window's
    summed NLL there too (for the tables' bootstrap intervals)."""
    score = _scorer(model_dir, dtype, pruned, device, batch_size, stream)
    result, per_window = {}, {}
    for name, path in windows.items():
        tokens = load_windows(path)
        nll = score(tokens, None)
        result[name] = ppl_of(nll, tokens.shape[1] - 1)
        per_window[name] = {"tokens_per_window": tokens.shape[1] - 1, "nll": nll.tolist()}
        log.info("%s perplexity: %.3f", name, result[name])
    if window_out is not None:
        atomic_write_json(window_out, per_window)
    atomic_write_json(out, result)
    return result


def evaluate_snapshots(
    model_dir: Path, dtype: str, pruned: Path, windows: Path, iterations: list[int], out: Path, device: str = "auto",
    batch_size: int = 1, stream: bool = False,
) -> dict[int, float]:
    """Perplexity of an ARMOR run's snapshot at each iteration on one evaluation set, written to out as JSON."""
    score = _scorer(model_dir, dtype, pruned, device, batch_size, stream)
    tokens = load_windows(windows)
    result = {}
    for it in iterations:
        result[it] = ppl_of(score(tokens, it), tokens.shape[1] - 1)
        log.info("iteration %d perplexity: %.3f", it, result[it])
    atomic_write_json(out, result)
    return result
