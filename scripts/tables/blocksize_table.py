"""Rule blocksize_table: ARMOR's perplexity and overhead by block size, from the main table."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.provenance import stamped
from armor.reporting.tables import blocksize_table, write_csv

logs.setup(snakemake.log[0])
table = blocksize_table(pd.read_csv(snakemake.input.main), snakemake.params.methods)
write_csv(stamped(table, Path(snakemake.input.provenance)), Path(snakemake.output[0]))
