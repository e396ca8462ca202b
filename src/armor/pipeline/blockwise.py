"""Prune a causal LM one decoder block at a time, with a resumable checkpoint per block."""

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from armor.pipeline.checkpoint import load_if_valid, save_tensors
from armor.methods.base import LayerResult
from armor.methods import Method
from armor.pipeline.models import block_linears, decoder_layers
from armor.proxy_loss import relative_loss
from armor.sparsity import zero_count
from armor.pipeline.stats import StatsCollector

log = logging.getLogger(__name__)

MODES = ("independent", "sequential")
FAULT_ENV = "ARMOR_FAULT_AFTER_BLOCKS"  # testing aid: SIGKILL this process after N newly pruned blocks
DELAY_ENV = "ARMOR_DELAY_PER_BLOCK"  # testing aid: sleep this many seconds after each newly pruned block (time-limit tests)


@dataclass
class LayerRecord:
    """What the results table reports for one pruned linear layer."""

    name: str
    shape: tuple[int, int]
    loss: float
    zeros: int
    numel: int


@dataclass
class PruneReport:
    """The outcome of pruning a whole model."""

    layers: list[LayerRecord] = field(default_factory=list)
    seconds: float = 0.0  # compute time summed over blocks, including blocks done before a resume
    resumed_blocks: int = 0


class _StopForward(Exception):
    pass


def capture_inputs(model: PreTrainedModel, tokens: Tensor, device: torch.device) -> tuple[Tensor, dict[str, Any]]:
    """Hidden states entering the first decoder block (n, seq, d) and the block's keyword arguments."""
    layers = decoder_layers(model)
    hidden: list[Tensor] = []
    kwargs: dict[str, Any] = {}

    def stop(module: nn.Module, args: tuple, kw: dict[str, Any]) -> None:
        hidden.append(args[0] if args else kw.pop("hidden_states"))
        kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            for row in tokens:  # one window at a time: the captured kwargs have batch size 1 and broadcast
                try:
                    model(row[None].to(device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    kwargs["use_cache"] = False
    return torch.cat(hidden), kwargs


def run_block(block: nn.Module, hidden: Tensor, kwargs: dict[str, Any], batch_size: int) -> Tensor:
    """Outputs of one decoder block for all calibration windows, in batches."""
    outs = []
    with torch.no_grad():
        for batch in hidden.split(batch_size):
            out = block(batch, **kwargs)
            outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.cat(outs)


def _checkpoint_path(ckpt_dir: Path, index: int) -> Path:
    return ckpt_dir / f"block_{index:04d}.safetensors"


def _prune_block(
    block: nn.Module, method: Method, hidden: Tensor, kwargs: dict[str, Any], options: dict[str, Any], batch_size: int, prefix: str
) -> tuple[dict[str, LayerResult], dict[str, Tensor], Tensor]:
    """Collect statistics on the dense block, prune it; returns results, h per layer and dense outputs."""
    linears = block_linears(block)
    with StatsCollector(linears, hessian=method.needs_hessian) as collector:
        dense_out = run_block(block, hidden, kwargs, batch_size)
    stats = collector.stats(prefix=prefix)
    weights = {name: lin.weight.detach().float() for name, lin in linears.items()}  # explicit fp32 for the solver
    results = method.prune_block(weights, stats, options)
    return results, {name: s.h for name, s in stats.items()}, dense_out


def prune_model(
    model: PreTrainedModel,
    calibration: Tensor,
    method: Method,
    ckpt_dir: Path,
    mode: str = "independent",
    options: dict[str, Any] | None = None,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 8,
) -> tuple[dict[str, Tensor], PruneReport]:
    """Prune every decoder block in place; returns every saved tensor by full name, and a report.

    A block's results are saved to `ckpt_dir` as soon as it is done; a later call with the same
    arguments loads finished blocks instead of recomputing them.
    """
    if mode not in MODES:
        raise ValueError(f"calibration mode must be one of {MODES}, got {mode!r}")
    if method.prune_block is None:
        raise ValueError(f"method {method.name!r} does not prune")
    options = dict(options or {})
    fault_after = int(os.environ.get(FAULT_ENV, "0"))
    delay = float(os.environ.get(DELAY_ENV, "0"))
    report = PruneReport()
    saved_tensors: dict[str, Tensor] = {}

    model.model.embed_tokens.to(device)
    model.model.rotary_emb.to(device)
    hidden, kwargs = capture_inputs(model, calibration, device)
    layers = decoder_layers(model)
    newly_pruned = 0
    for index, block in enumerate(layers):
        prefix = f"model.layers.{index}."
        block.to(device)
        path = _checkpoint_path(ckpt_dir, index)
        saved = load_if_valid(path)
        start = time.perf_counter()
        linears = block_linears(block)
        if saved is not None:
            tensors, meta = saved
            dense_out = run_block(block, hidden, kwargs, batch_size) if mode == "independent" else None
            report.resumed_blocks += 1
            block_seconds = meta["seconds"]
        else:
            results, h, dense_out = _prune_block(
                block, method, hidden, kwargs, {**options, "seed": options.get("seed", 0) + index}, batch_size, prefix
            )
            tensors = {}
            records = []
            for name, result in results.items():
                weight = linears[name].weight
                tensors[f"{name}.weight"] = result.weight.to(weight.dtype)
                tensors[f"{name}.h"] = h[name]
                tensors.update({f"{name}.{key}": value for key, value in result.extras.items()})
                sparse_part = result.extras.get("core", tensors[f"{name}.weight"])  # ARMOR: its 2:4 core
                records.append([name, relative_loss(weight.detach().float(), result.weight, h[name]), zero_count(sparse_part)])
            block_seconds = time.perf_counter() - start
            meta = {"seconds": block_seconds, "records": records}
            save_tensors(path, tensors, meta)
            newly_pruned += 1
        with torch.no_grad():
            for name, lin in linears.items():
                if f"{name}.weight" in tensors:
                    lin.weight.copy_(tensors[f"{name}.weight"].to(lin.weight.device))
        hidden = dense_out if mode == "independent" else run_block(block, hidden, kwargs, batch_size)
        saved_tensors.update({prefix + key: value for key, value in tensors.items()})
        for name, loss, zeros in meta["records"]:
            weight = tensors[f"{name}.weight"]
            report.layers.append(LayerRecord(prefix + name, tuple(weight.shape), loss, zeros, weight.numel()))
        report.seconds += block_seconds
        block.to("cpu")
        mean_loss = sum(r[1] for r in meta["records"]) / max(len(meta["records"]), 1)
        status = "resumed from checkpoint" if saved is not None else f"pruned in {block_seconds:.1f}s"
        log.info("block %d/%d %s; mean proxy loss %.4f", index + 1, len(layers), status, mean_loss)
        if delay and saved is None:
            log.warning("%s=%g: sleeping after block %d", DELAY_ENV, delay, index)
            time.sleep(delay)
        if fault_after and newly_pruned >= fault_after:
            log.warning("%s=%d: killing this process after block %d", FAULT_ENV, fault_after, index)
            os.kill(os.getpid(), signal.SIGKILL)
    return saved_tensors, report
