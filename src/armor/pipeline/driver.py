"""Prune a fetched model in one process, the way the workflow's jobs do it: calibration pass, pruned parts or the
sequential chain, then the assembled run (useful without Snakemake, and in tests)."""

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from armor.methods import get_method
from armor.pipeline.assemble import assemble
from armor.pipeline.blocks import decoder_layers, skeleton
from armor.pipeline.calibration import calibrate
from armor.pipeline.models import DTYPES
from armor.pipeline.prune import prune_chain, prune_part


def prune_model(
    model_dir: Path, dtype: str, method: str, options: dict[str, Any], windows: Tensor, out_dir: Path,
    mode: str | None = None, blocks_per_part: int = 4, device: torch.device = torch.device("cpu"), batch_size: int = 8,
) -> dict[str, Any]:
    """Write the run of `method` on a fetched model to out_dir (pruned/, layers.csv, trace.csv, summary.json).

    `mode` defaults to the method's own calibration mode; work files go to out_dir/work and are removed.
    """
    spec = get_method(method)
    mode = mode or spec.default_mode
    work, parts = out_dir / "work", []
    if mode == "independent":
        n_blocks = len(decoder_layers(skeleton(model_dir, DTYPES[dtype])))
        calibrate(model_dir, DTYPES[dtype], windows, work / "calibration", work / "calibrating", device, batch_size, spec.needs_hessian(options))
        for start in range(0, n_blocks, blocks_per_part):
            parts.append(work / f"part{start}")
            blocks = list(range(start, min(start + blocks_per_part, n_blocks)))
            prune_part(model_dir, dtype, method, options, blocks, work / "calibration", work / f"ckpt{start}", parts[-1], device)
    elif mode == "sequential":
        parts.append(work / "chain")
        prune_chain(model_dir, dtype, method, options, windows, work / "ckpt", parts[-1], device, batch_size)
    summary = assemble(model_dir, DTYPES[dtype], method, options, mode if method != "dense" else "none", parts, out_dir / "pruned", out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return summary
