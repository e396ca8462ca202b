"""Rule cost_figure: quality against prune cost, from main.csv only."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.figures import cost_figure

logs.setup(snakemake.log[0])
cost_figure(pd.read_csv(snakemake.input[0]), Path(snakemake.output.pdf), Path(snakemake.output.png))
