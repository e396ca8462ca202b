"""Rule calibrate: one dense pass over the calibration windows, recording every block's statistics."""

from pathlib import Path

import torch

from armor import logs
from armor.pipeline.calibration import calibrate
from armor.pipeline.data import load_windows
from armor.pipeline.models import DTYPES
from armor.pipeline.runs import resolve_device

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
calibrate(
    model_dir=Path(snakemake.input.model),
    dtype=DTYPES[p.dtype],
    windows=load_windows(Path(snakemake.input.windows)),
    out_dir=Path(snakemake.output[0]),
    work_dir=Path(p.work),
    device=resolve_device(p.device),
    batch_size=p.batch_size,
    hessian=p.hessian,
)
