"""Rule render_table: one table CSV as Markdown and LaTeX, with the provenance footnote (reads only the CSV and results/provenance.json)."""

import json
from pathlib import Path

from armor import logs
from armor.reporting.provenance import footnote
from armor.reporting.render import render

logs.setup(snakemake.log[0])
note = footnote(json.loads(Path(snakemake.input.provenance).read_text()))
shown = render(snakemake.wildcards.table, Path(snakemake.input.table), Path(snakemake.output.markdown), Path(snakemake.output.latex), note)
print(shown.to_string(index=False))
