"""Rule lm_tasks: the offline lm-eval tasks (JSONL, task YAMLs and their loader) in one folder."""

from pathlib import Path

from armor import logs
from armor.evaluation.downstream import write_local_tasks

logs.setup(snakemake.log[0])
write_local_tasks(snakemake.params.names, Path(snakemake.output[0]), snakemake.params.per_task, snakemake.params.seed)
