"""Rule prune_part: prune a part of consecutive decoder blocks from the recorded statistics (independent mode)."""

from pathlib import Path

import torch

from armor import logs
from armor.pipeline.prune import prune_part
from armor.pipeline.runs import resolve_device

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
prune_part(
    model_dir=Path(snakemake.input.model),
    dtype=p.dtype,
    method_name=p.method,
    options=p.options,
    blocks=p.blocks,
    calibration_dir=Path(snakemake.input.calibration),
    work_dir=Path(p.work),
    out_dir=Path(snakemake.output[0]),
    device=resolve_device(p.device),
)
