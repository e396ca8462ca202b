"""Rule export_dense: the dense-equivalent model of one run (standard architecture, no custom code), with its card."""

from pathlib import Path

from armor import logs
from armor.inference.model_card import model_card
from armor.inference.packed import export_dense

logs.setup(snakemake.log[0])
p, i, w = snakemake.params, snakemake.input, snakemake.wildcards
card = model_card(w.model, p.spec, p.variant, Path(i.summary), Path(i.perplexity), Path(i.downstream) if i.downstream else None,
                  p.calibration, p.options, packed=False)
export_dense(Path(i.model), p.dtype, Path(i.pruned), Path(snakemake.output[0]), card)
