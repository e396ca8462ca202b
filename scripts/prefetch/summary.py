"""Rule prefetch: what the Hugging Face cache holds for the config and its size, as a Markdown table (make prefetch
prints it)."""

import json
import logging
from pathlib import Path

from armor import logs
from armor.prefetch.fetch import cache_summary
from armor.pipeline.checkpoint import atomic_write_text

logs.setup(snakemake.log[0])
records = {Path(path).stem: json.loads(Path(path).read_text()) for path in snakemake.input}
summary = cache_summary(records)
logging.getLogger("prefetch").info("the cache for this config:\n%s", summary)
atomic_write_text(Path(snakemake.output[0]), summary)
