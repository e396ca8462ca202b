"""Rule render_table: one table CSV as Markdown and LaTeX (reads only the CSV)."""

from pathlib import Path

from armor import logs
from armor.reporting.render import render

logs.setup(snakemake.log[0])
shown = render(snakemake.wildcards.table, Path(snakemake.input[0]), Path(snakemake.output.markdown), Path(snakemake.output.latex))
print(shown.to_string(index=False))
