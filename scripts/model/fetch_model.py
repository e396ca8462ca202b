"""Rule fetch_model: the model's safetensors, config and tokenizer as a folder: linked from the Hugging Face cache
(hub, as prefetched), linked (local), dequantised (GGUF) or random (tests)."""

import json
from pathlib import Path

from armor import logs
from armor.pipeline.models import fetch_model

logs.setup(snakemake.log[0])
prefetched = json.loads(Path(snakemake.input.prefetched).read_text()) if snakemake.input.prefetched else None
fetch_model(snakemake.params.spec, Path(snakemake.output[0]), prefetched)
