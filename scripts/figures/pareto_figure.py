"""Rule pareto_figure: perplexity against inference speed, from main.csv and speed.csv only."""

from pathlib import Path

import pandas as pd

from armor import logs
from armor.reporting.figures import pareto_figure

logs.setup(snakemake.log[0])
pareto_figure(pd.read_csv(snakemake.input.main), pd.read_csv(snakemake.input.speed), Path(snakemake.output.pdf), Path(snakemake.output.png))
