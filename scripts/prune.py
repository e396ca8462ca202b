"""Rule prune: prune one model with one method, resuming from per-block checkpoints."""

from pathlib import Path

import torch

from armor import logs
from armor.pipeline.runs import prune_run

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
prune_run(
    model_dir=Path(snakemake.input.model),
    dtype=p.dtype,
    calibration=Path(snakemake.input.calibration) if snakemake.input.calibration else None,
    method_name=snakemake.wildcards.method,
    options=p.options,
    mode=p.mode,
    ckpt_dir=Path(p.checkpoints),
    out_dir=Path(snakemake.output.pruned).parent,
    device=p.device,
    batch_size=p.batch_size,
)
