"""Rule perplexity: evaluate one pruned model on every evaluation set."""

from pathlib import Path

import torch

from armor import logs
from armor.evaluation.perplexity import evaluate_run

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
evaluate_run(
    model_dir=Path(snakemake.input.model),
    dtype=snakemake.params.dtype,
    pruned=Path(snakemake.input.pruned),
    windows={name: Path(path) for name, path in zip(snakemake.params.datasets, snakemake.input.windows, strict=True)},
    out=Path(snakemake.output.ppl),
    window_out=Path(snakemake.output.windows),
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
    stream=snakemake.params.stream,
)
