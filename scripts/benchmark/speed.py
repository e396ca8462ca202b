"""Rule speed: prefill and decode throughput of one packed model."""

from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.inference.speed import model_speed
from armor.pipeline.runs import resolve_device
from armor.reporting.tables import write_csv

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
rows = model_speed(Path(snakemake.input[0]), p.batch_sizes, p.prompt_len, p.decode_tokens, resolve_device(p.device))
keys = {k: v for k, v in snakemake.wildcards.items()}
table = pd.DataFrame([{**keys, **row} for row in rows])
write_csv(table, Path(snakemake.output[0]))
