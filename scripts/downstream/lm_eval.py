"""Rule lm_eval: lm-evaluation-harness scores of one pruned model."""

from pathlib import Path

import torch

from armor import logs
from armor.evaluation.downstream import evaluate_downstream

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
evaluate_downstream(
    model_dir=Path(snakemake.input.model),
    dtype=snakemake.params.dtype,
    pruned=Path(snakemake.input.pruned),
    tasks=snakemake.params.tasks,
    task_dir=Path(snakemake.input.tasks) if snakemake.input.tasks else None,
    out=Path(snakemake.output[0]),
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
)
