"""Rule snapshot_perplexity: perplexity of one ARMOR run at its saved intermediate iterations."""

from pathlib import Path

import torch

from armor import logs
from armor.evaluation.perplexity import evaluate_snapshots

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
evaluate_snapshots(
    model_dir=Path(snakemake.input.model),
    dtype=snakemake.params.dtype,
    pruned=Path(snakemake.input.pruned),
    windows=Path(snakemake.input.windows),
    iterations=snakemake.params.iterations,
    out=Path(snakemake.output[0]),
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
    stream=snakemake.params.stream,
)
