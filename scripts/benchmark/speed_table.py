"""Rule speed_table: every run's speed rows in one table."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.tables import write_csv

logs.setup(snakemake.log[0])
write_csv(pd.concat([pd.read_csv(f) for f in snakemake.input], ignore_index=True), Path(snakemake.output[0]))
