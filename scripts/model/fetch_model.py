"""Rule fetch_model: save a plain safetensors copy of the configured model."""

from pathlib import Path

from armor import logs
from armor.pipeline.models import fetch_model

logs.setup(snakemake.log[0])
fetch_model(snakemake.params.spec, Path(snakemake.output[0]))
