"""The calibration pass: one dense forward over the calibration windows, block by block, recording what the methods
need of every linear layer's inputs into one statistics file per decoder block."""

import logging
import shutil
import time
from pathlib import Path

import torch
from torch import Tensor

from armor.methods.base import LayerStats
from armor.pipeline.blocks import BlockRunner, block_linears
from armor.pipeline.checkpoint import atomic_dir, atomic_write_json, load_tensors, move_tensors, read_meta, save_tensors
from armor.pipeline.faults import after_block
from armor.pipeline.fingerprint import FORMAT_VERSION, Resumption, digest, fingerprinted, model_identity, tensor_digest
from armor.pipeline.stats import StatsCollector

log = logging.getLogger(__name__)

STATS_FILE = "block_{:04d}.safetensors"


def stats_path(folder: Path, index: int) -> Path:
    """The statistics file of decoder block `index` in a calibration folder."""
    return Path(folder) / STATS_FILE.format(index)


def calibrate(
    model_dir: Path, dtype: torch.dtype, windows: Tensor, out_dir: Path, work_dir: Path, device: torch.device,
    batch_size: int, hessian: bool,
) -> None:
    """Write h = diag(XᵀX)/n (and XᵀX/n with `hessian`) of every linear, one file per block, to out_dir.

    Finished blocks are kept in work_dir, so a killed pass resumes: it re-runs the finished blocks' forward only, and
    only for blocks recorded from the same model, windows, dtype and statistics (the batch size and device change
    rounding only).
    """
    runner = BlockRunner(model_dir, dtype, windows, device, batch_size)
    hidden = runner.hidden
    start = time.perf_counter()
    settings = {"format": FORMAT_VERSION, "artefact": "calibration statistics", "model": model_identity(model_dir),
                "dtype": str(dtype), "windows": tensor_digest(windows), "hessian": hessian}
    resumption = Resumption("calibration")
    recorded = 0
    for index in range(len(runner)):
        block = runner.load(index)
        path = stats_path(work_dir, index)
        if resumption.load(path, settings | {"block": index}) is not None:
            hidden = runner.run(index, block, hidden)
            status = "already recorded"
        else:
            with StatsCollector(block_linears(block), hessian=hessian) as collector:
                hidden = runner.run(index, block, hidden)
            stats = collector.stats(prefix=f"{runner.prefix}.{index}.")
            tensors = {f"{name}.h": s.h for name, s in stats.items()}
            tensors |= {f"{name}.hessian": s.hessian for name, s in stats.items() if s.hessian is not None}
            save_tensors(path, tensors, fingerprinted(settings | {"block": index}, {"tokens": next(iter(stats.values())).n}))
            status = "recorded"
            recorded += 1
        runner.release(index)
        log.info("calibration block %d/%d %s (%.0fs)", index + 1, len(runner), status, time.perf_counter() - start)
        if status == "recorded":
            after_block("calibrate", recorded, index)
    resumption.report()
    with atomic_dir(out_dir) as tmp:
        for index in range(len(runner)):
            move_tensors(stats_path(work_dir, index), stats_path(tmp, index))
        atomic_write_json(tmp / "calibration.json", {"blocks": len(runner), "windows": list(windows.shape), "hessian": hessian,
                                                      "settings": settings, "fingerprint": digest(settings)})
    shutil.rmtree(work_dir, ignore_errors=True)


def load_stats(folder: Path, index: int, device: torch.device) -> dict[str, LayerStats]:
    """The statistics of every linear of block `index`, by name within the block."""
    tensors, meta = load_tensors(stats_path(folder, index))
    names = {key.rsplit(".", 1)[0] for key in tensors}
    return {
        name: LayerStats(h=tensors[f"{name}.h"].to(device), n=meta["tokens"], hessian=tensors[f"{name}.hessian"].to(device) if f"{name}.hessian" in tensors else None)
        for name in sorted(names)
    }


def stats_fingerprint(folder: Path, index: int) -> str:
    """The fingerprint of block `index`'s statistics: what a pruned block computed from them records."""
    return read_meta(stats_path(folder, index)).get("fingerprint", "none")
