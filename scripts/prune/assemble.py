"""Rule assemble: the run's sharded safetensors with index, layers.csv, trace.csv and summary.json."""

from pathlib import Path

from armor import logs
from armor.pipeline.assemble import assemble
from armor.pipeline.models import DTYPES

logs.setup(snakemake.log[0])
p = snakemake.params
assemble(
    model_dir=Path(snakemake.input.model),
    dtype=DTYPES[p.dtype],
    method=p.method,
    options=p.options,
    mode=p.mode,
    parts=[Path(part) for part in snakemake.input.parts],
    pruned_dir=Path(snakemake.output.pruned),
    run_dir=Path(snakemake.output.summary).parent,
)
