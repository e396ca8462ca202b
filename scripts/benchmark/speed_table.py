"""Rule speed_table: every run's speed rows in one table."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.provenance import stamped
from armor.reporting.tables import write_csv

logs.setup(snakemake.log[0])
table = pd.concat([pd.read_csv(f) for f in snakemake.input.runs], ignore_index=True)
write_csv(stamped(table, Path(snakemake.input.provenance)), Path(snakemake.output[0]))
