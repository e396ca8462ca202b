"""One run = one model × method × block size: prune it, save it, evaluate it."""

import csv
import io
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from armor.evaluation import downstream
from armor.optimizer.blockdiag import block_params
from armor.pipeline.blockwise import prune_model
from armor.pipeline.checkpoint import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from armor.pipeline.cpu import keep_freed_memory
from armor.pipeline.data import load_windows
from armor.methods import get_method
from armor.pipeline.models import apply_weights, block_linears, decoder_layers, load_model
from armor.evaluation.perplexity import perplexity
from armor.sparsity import zero_count

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; 'cuda' without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was configured but no CUDA GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


LAYER_COLUMNS = ["layer", "d_out", "d_in", "proxy_loss", "zeros", "numel"]


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    """Write a header and rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _trace_rows(tensors: dict[str, Tensor]) -> Iterator[list[Any]]:
    """Proxy loss of every optimised layer at every traced iteration (ARMOR; none otherwise)."""
    for key, trace in tensors.items():
        if key.endswith(".trace"):
            layer = key.removesuffix(".trace")
            iterations = tensors[f"{layer}.trace_iterations"].tolist()
            yield from ([layer, it, f"{loss:.8g}"] for it, loss in zip(iterations, trace.tolist(), strict=True))


def prune_run(
    model_dir: Path,
    dtype: str,
    calibration: Path | None,
    method_name: str,
    options: dict[str, Any],
    mode: str,
    ckpt_dir: Path,
    out_dir: Path,
    device: str = "auto",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Prune a fetched model; write pruned.safetensors, layers.csv, trace.csv and summary.json to out_dir."""
    start = time.perf_counter()
    keep_freed_memory()
    method = get_method(method_name)
    model, _ = load_model(model_dir, dtype)
    tensors: dict[str, Tensor] = {}
    if method.prune_block is None:
        rows = [
            {"layer": f"model.layers.{i}.{name}", "d_out": lin.out_features, "d_in": lin.in_features,
             "proxy_loss": 0.0, "zeros": zero_count(lin.weight), "numel": lin.weight.numel()}
            for i, block in enumerate(decoder_layers(model))
            for name, lin in block_linears(block).items()
        ]
        seconds, resumed = 0.0, 0
    else:
        tokens = load_windows(calibration)
        tensors, report = prune_model(
            model, tokens, method, ckpt_dir, mode=mode, options=options, device=resolve_device(device), batch_size=batch_size
        )
        rows = [
            {"layer": r.name, "d_out": r.shape[0], "d_in": r.shape[1], "proxy_loss": r.loss, "zeros": r.zeros, "numel": r.numel}
            for r in report.layers
        ]
        seconds, resumed = report.seconds, report.resumed_blocks
    numel = sum(r["numel"] for r in rows)
    b = options.get("block_size") if method_name == "armor" else None
    wrappers = sum(block_params(r["d_out"], b) + block_params(r["d_in"], b) for r in rows) if b else 0
    summary = {
        "method": method_name,
        "proxy_loss": sum(r["proxy_loss"] for r in rows) / len(rows),
        "zero_fraction": sum(r["zeros"] for r in rows) / numel,
        "overhead": wrappers / numel,
        "prune_seconds": seconds,
        "wall_seconds": time.perf_counter() - start,
        "resumed_blocks": resumed,
        "calibration_mode": mode if method.prune_block else "none",
        "layers": len(rows),
    }
    save_tensors(out_dir / "pruned.safetensors", tensors, {"method": method_name, **options})
    _write_csv(out_dir / "layers.csv", LAYER_COLUMNS, ([r[k] for k in LAYER_COLUMNS] for r in rows))
    _write_csv(out_dir / "trace.csv", ["layer", "iteration", "proxy_loss"], _trace_rows(tensors))
    atomic_write_json(out_dir / "summary.json", summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("%s: mean proxy loss %.4f, zero fraction %.4f, %.1fs", method_name, summary["proxy_loss"], summary["zero_fraction"], seconds)
    return summary


def pruned_weights(tensors: dict[str, Tensor], snapshot: int | None = None) -> dict[str, Tensor]:
    """The reconstructed weights in a run's loaded tensors by parameter name; with snapshot=k, ARMOR's at iteration k.

    A layer whose optimisation stopped early has no snapshot past its last iteration: its final weight stands in.
    """
    weights = {k: v for k, v in tensors.items() if k.endswith(".weight")}
    if snapshot is None:
        return weights
    if not any(k.endswith(f".snapshot_{snapshot}") for k in tensors):
        raise KeyError(f"the run holds no snapshot at iteration {snapshot}; set armor.snapshots in the config and prune again")
    return {k: tensors.get(f"{k.removesuffix('.weight')}.snapshot_{snapshot}", v) for k, v in weights.items()}


def load_pruned_weights(pruned: Path) -> dict[str, Tensor]:
    """The reconstructed weights of a pruned run, by full parameter name."""
    return pruned_weights(load_tensors(pruned)[0])


def pruned_model(model_dir: Path, dtype: str, tensors: dict[str, Tensor], device: str) -> tuple[Any, Any, torch.device]:
    """The fetched model with a run's pruned weights applied, on the resolved device."""
    model, tokenizer = load_model(model_dir, dtype)
    apply_weights(model, pruned_weights(tensors))
    dev = resolve_device(device)
    return model.to(dev), tokenizer, dev


def evaluate_run(
    model_dir: Path, dtype: str, pruned: Path, windows: dict[str, Path], out: Path, device: str = "auto", batch_size: int = 1
) -> dict[str, float]:
    """Perplexity of the pruned model on each evaluation set, written to out as JSON."""
    model, _, dev = pruned_model(model_dir, dtype, load_tensors(pruned)[0], device)
    result = {}
    for name, path in windows.items():
        result[name] = perplexity(model, load_windows(path), batch_size=batch_size, device=dev)
        log.info("%s perplexity: %.3f", name, result[name])
    atomic_write_json(out, result)
    return result


def evaluate_snapshots(
    model_dir: Path, dtype: str, pruned: Path, windows: Path, iterations: list[int], out: Path, device: str = "auto", batch_size: int = 1
) -> dict[int, float]:
    """Perplexity of an ARMOR run's snapshot at each iteration on one evaluation set, written to out as JSON."""
    tensors, _ = load_tensors(pruned)
    model, _, dev = pruned_model(model_dir, dtype, tensors, device)
    tokens = load_windows(windows)
    result = {}
    for it in iterations:
        apply_weights(model, pruned_weights(tensors, it))
        result[it] = perplexity(model, tokens, batch_size=batch_size, device=dev)
        log.info("iteration %d perplexity: %.3f", it, result[it])
    atomic_write_json(out, result)
    return result


def evaluate_downstream(
    model_dir: Path, dtype: str, pruned: Path, tasks: dict[str, dict[str, Any]], task_dir: Path | None, out: Path,
    device: str = "auto", batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """lm-eval scores of the pruned model on every configured task, written to out as JSON."""
    model, tokenizer, dev = pruned_model(model_dir, dtype, load_tensors(pruned)[0], device)
    scores = downstream.evaluate(model, tokenizer, tasks, task_dir, batch_size, str(dev))
    atomic_write_json(out, scores)
    return scores
