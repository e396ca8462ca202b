"""Rule iterations_figure: the paper's figure 3 left, from iterations.csv only."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.figures import iterations_figure

logs.setup(snakemake.log[0])
iterations_figure(pd.read_csv(snakemake.input[0]), Path(snakemake.output.pdf), Path(snakemake.output.png))
