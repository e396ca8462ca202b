"""Rule blocksize_figure: the paper's figure 3 right, from blocksize.csv only."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.figures import blocksize_figure

logs.setup(snakemake.log[0])
blocksize_figure(pd.read_csv(snakemake.input[0]), Path(snakemake.output.pdf), Path(snakemake.output.png))
