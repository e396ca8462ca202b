"""Rule prune_chain: prune every decoder block in order, each on the pruned blocks' outputs (sequential mode)."""

from pathlib import Path

import torch

from armor import logs
from armor.pipeline.data import load_windows
from armor.pipeline.prune import prune_chain
from armor.pipeline.runs import resolve_device

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
prune_chain(
    model_dir=Path(snakemake.input.model),
    dtype=p.dtype,
    method_name=p.method,
    options=p.options,
    windows=load_windows(Path(snakemake.input.windows)),
    work_dir=Path(p.work),
    out_dir=Path(snakemake.output[0]),
    device=resolve_device(p.device),
    batch_size=p.batch_size,
)
