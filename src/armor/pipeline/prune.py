"""Pruning decoder blocks with one checkpoint per block (a killed job resumes at its first unfinished block).

Independent calibration: a part of consecutive blocks, each from its recorded statistics, reading only that block's
weights (parts run as separate jobs). Sequential calibration: the whole chain in one job, each block calibrated on
the outputs of the pruned blocks before it.
"""

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from armor.methods import Method, get_method
from armor.methods.base import LayerStats
from armor.pipeline.blocks import BlockRunner, WeightFiles, block_linears, decoder_layers, layers_path, skeleton
from armor.pipeline.calibration import load_stats, stats_fingerprint
from armor.pipeline.checkpoint import atomic_dir, move_tensors, save_tensors
from armor.pipeline.cpu import tune_cpu
from armor.pipeline.faults import after_block
from armor.pipeline.fingerprint import FORMAT_VERSION, Resumption, fingerprinted, model_identity, tensor_digest
from armor.pipeline.models import DTYPES
from armor.pipeline.stats import StatsCollector
from armor.proxy_loss import relative_loss
from armor.software import device_name
from armor.sparsity import zero_count

log = logging.getLogger(__name__)

BLOCK_FILE = "block_{:04d}.safetensors"


def block_path(folder: Path, index: int) -> Path:
    """The file holding one pruned decoder block."""
    return Path(folder) / BLOCK_FILE.format(index)


def prune_linears(
    method: Method, weights: dict[str, Tensor], stats: dict[str, LayerStats], options: dict[str, Any], index: int,
    prefix: str, dtype: torch.dtype,
) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Prune one block's linears (float32 weights by name in the block); the tensors to save and one record per layer.

    The weight and ARMOR's snapshots (the weight at earlier iterations) are saved in the model's dtype; the factors stay float32.
    """
    results = method.prune_block(weights, stats, {**options, "seed": options.get("seed", 0) + index})
    tensors: dict[str, Tensor] = {}
    records = []
    for name, result in results.items():
        full = prefix + name
        tensors |= {f"{full}.weight": result.weight.to(dtype), f"{full}.h": stats[name].h}
        tensors |= {f"{full}.{key}": value.to(dtype) if key.startswith("snapshot_") else value for key, value in result.extras.items()}
        d_out, d_in = result.weight.shape
        records.append({
            "layer": full, "d_out": d_out, "d_in": d_in, "proxy_loss": relative_loss(weights[name], result.weight, stats[name].h),
            "zeros": zero_count(result.extras.get("core", result.weight)), "numel": result.weight.numel(), **result.info,
        })
    return tensors, records


def _block_meta(index: int, parts: dict[str, float], device: torch.device, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a pruned block file records besides its settings: its index, how long it took (in all and by part: reading
    its inputs, the calibration forward pass, the method) on which device, its layers."""
    return {"block": index, "seconds": sum(parts.values()), "parts": parts, "device": device_name(device), "gpu": device.type == "cuda",
            "layers": records}


def run_settings(model_dir: Path, dtype: str, method_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """What determines every pruned block of a run, besides its input statistics: the fingerprint's common part, as
    JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps({"format": FORMAT_VERSION, "artefact": "pruned block", "model": model_identity(model_dir),
                                  "dtype": dtype, "method": method_name, "options": options}))


def _publish(blocks: list[int], work_dir: Path, out_dir: Path) -> None:
    """Move the finished blocks' files into out_dir at once, then drop the work folder."""
    with atomic_dir(out_dir) as tmp:
        for index in blocks:
            move_tensors(block_path(work_dir, index), block_path(tmp, index))
    shutil.rmtree(work_dir, ignore_errors=True)


def prune_part(
    model_dir: Path, dtype: str, method_name: str, options: dict[str, Any], blocks: list[int], calibration_dir: Path,
    work_dir: Path, out_dir: Path, device: torch.device,
) -> None:
    """Prune decoder blocks `blocks` from the dense model's statistics, holding one block at a time."""
    tune_cpu()
    method = get_method(method_name)
    model, files = skeleton(model_dir, DTYPES[dtype]), WeightFiles(model_dir)
    layers, path = decoder_layers(model), layers_path(model)
    run = run_settings(model_dir, dtype, method_name, options)
    resumption = Resumption(f"{method_name} part {blocks[0]}-{blocks[-1]}")
    newly_pruned = 0
    for count, index in enumerate(blocks, 1):
        target = block_path(work_dir, index)
        settings = run | {"statistics": stats_fingerprint(calibration_dir, index), "block": index}
        if resumption.load(target, settings) is not None:
            log.info("block %d (%d/%d of this part) resumed from checkpoint", index, count, len(blocks))
            continue
        start = time.perf_counter()
        prefix = f"{path}.{index}."
        names = list(block_linears(layers[index]))
        loaded = files.load([f"{prefix}{n}.weight" for n in names], torch.float32, device)  # explicit fp32 for the solvers
        weights = {n: loaded[f"{prefix}{n}.weight"] for n in names}
        stats = load_stats(calibration_dir, index, device)
        read = time.perf_counter()
        tensors, records = prune_linears(method, weights, stats, options, index, prefix, DTYPES[dtype])
        parts = {"read": read - start, "method": time.perf_counter() - read}
        save_tensors(target, tensors, fingerprinted(settings, _block_meta(index, parts, device, records)))
        newly_pruned += 1
        mean = sum(r["proxy_loss"] for r in records) / len(records)
        log.info("block %d (%d/%d of this part) pruned in %.1fs (%s); mean proxy loss %.4f", index, count, len(blocks),
                 sum(parts.values()), ", ".join(f"{k} {v:.1f}s" for k, v in parts.items()), mean)
        del loaded, weights, tensors
        after_block("prune", newly_pruned, index)
    resumption.report()
    _publish(blocks, work_dir, out_dir)


def prune_chain(
    model_dir: Path, dtype: str, method_name: str, options: dict[str, Any], windows: Tensor, work_dir: Path,
    out_dir: Path, device: torch.device, batch_size: int,
) -> None:
    """Prune every block in order, each calibrated on the outputs of the already-pruned blocks before it."""
    tune_cpu()
    method = get_method(method_name)
    runner = BlockRunner(model_dir, DTYPES[dtype], windows, device, batch_size)
    hidden = runner.hidden
    run = run_settings(model_dir, dtype, method_name, options) | {"windows": tensor_digest(windows)}
    resumption = Resumption(f"{method_name} chain")
    newly_pruned = 0
    for index in range(len(runner)):
        start = time.perf_counter()
        block = runner.load(index)
        linears = block_linears(block)
        prefix = f"{runner.prefix}.{index}."
        target = block_path(work_dir, index)
        settings = run | {"block": index}
        saved = resumption.load(target, settings)
        if saved is None:
            read = time.perf_counter()
            with StatsCollector(linears, hessian=method.needs_hessian(options)) as collector:
                runner.run(index, block, hidden)
            weights = {name: lin.weight.detach().float() for name, lin in linears.items()}  # explicit fp32 for the solvers
            calibrated = time.perf_counter()
            tensors, records = prune_linears(method, weights, collector.stats(prefix), options, index, prefix, DTYPES[dtype])
            parts = {"read": read - start, "calibration": calibrated - read, "method": time.perf_counter() - calibrated}
            save_tensors(target, tensors, fingerprinted(settings, _block_meta(index, parts, device, records)))
            newly_pruned += 1
        else:
            tensors = saved[0]
        with torch.no_grad():
            for name, lin in linears.items():
                lin.weight.copy_(tensors[f"{prefix}{name}.weight"])
        hidden = runner.run(index, block, hidden)
        runner.release(index)
        log.info("block %d/%d %s (%.1fs)", index + 1, len(runner), "resumed from checkpoint" if saved else "pruned", time.perf_counter() - start)
        del tensors
        if saved is None:
            after_block("prune", newly_pruned, index)
    resumption.report()
    _publish(list(range(len(runner))), work_dir, out_dir)
