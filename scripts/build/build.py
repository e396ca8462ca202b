"""Rule build: the packed inference model of one run."""

from pathlib import Path

from armor import logs
from armor.inference.packed import pack

logs.setup(snakemake.log[0])
pack(Path(snakemake.input.model), snakemake.params.dtype, Path(snakemake.input.pruned), Path(snakemake.output[0]))
