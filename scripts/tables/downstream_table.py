"""Rule downstream_table: every run's lm-eval scores and their mean."""

from pathlib import Path

from armor import logs
from armor.reporting.provenance import stamped
from armor.reporting.tables import downstream_table, write_csv

logs.setup(snakemake.log[0])
table = downstream_table(snakemake.params.runs, snakemake.input.runs, snakemake.input.summaries, snakemake.params.benchmarks)
write_csv(stamped(table, Path(snakemake.input.provenance)), Path(snakemake.output[0]))
print(table.to_string(index=False))
