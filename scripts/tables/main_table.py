"""Rule main_table: one row per model × method × block size (averaged over seeds), and one per run."""

from pathlib import Path

from armor import logs
from armor.reporting.tables import main_table, run_table, write_csv

logs.setup(snakemake.log[0])
per_seed = run_table(snakemake.params.runs, snakemake.input.summaries, snakemake.input.perplexities)
table = main_table(per_seed, snakemake.input.window_nll)
write_csv(per_seed, Path(snakemake.output.by_seed))
write_csv(table, Path(snakemake.output.main))
print(table.to_string(index=False))
