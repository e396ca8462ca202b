"""Rule iterations_table: ARMOR's proxy loss and perplexity over iterations."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.provenance import stamped
from armor.reporting.tables import iterations_table, write_csv

logs.setup(snakemake.log[0])
table = iterations_table(
    pd.read_csv(snakemake.input.by_seed), snakemake.params.runs, snakemake.input.traces, snakemake.input.snapshots, snakemake.params.dataset
)
write_csv(stamped(table, Path(snakemake.input.provenance)), Path(snakemake.output[0]))
