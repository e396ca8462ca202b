"""Rule main_table: one row per model × method × block size (averaged over seeds), and one per run."""

from pathlib import Path

from armor import logs
from armor.reporting.provenance import stamped
from armor.reporting.tables import main_table, run_table, write_csv

logs.setup(snakemake.log[0])
per_seed = run_table(snakemake.params.runs, snakemake.input.summaries, snakemake.input.perplexities, snakemake.params.benchmarks)
table = main_table(per_seed, snakemake.input.window_nll, snakemake.params.baselines)
provenance = Path(snakemake.input.provenance)
write_csv(stamped(per_seed, provenance), Path(snakemake.output.by_seed))
write_csv(stamped(table, provenance), Path(snakemake.output.main))
print(table.to_string(index=False))
