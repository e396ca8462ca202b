"""Rule main_table: one row per model × method × block size."""

from pathlib import Path

from armor import logs
from armor.reporting.tables import main_table, write_csv

logs.setup(snakemake.log[0])
table = main_table(snakemake.params.runs, snakemake.input.summaries, snakemake.input.perplexities, snakemake.input.window_nll)
write_csv(table, Path(snakemake.output[0]))
print(table.to_string(index=False))
