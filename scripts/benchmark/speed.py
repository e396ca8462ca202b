"""Rule speed: prefill and decode throughput of one packed model."""

from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.inference.speed import model_speed, timing_dtype
from armor.pipeline.runs import resolve_device
from armor.reporting.tables import write_csv

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
reference = Path(snakemake.input.reference) if snakemake.input.reference else None
device = resolve_device(p.device)
dtype = timing_dtype(p.dtype, device)  # the CPU times each model in its own dtype
rows = model_speed(Path(snakemake.input.packed), reference, p.batch_sizes, p.prompt_len, p.decode_tokens, device, p.rounds, dtype)
keys = dict(snakemake.wildcards.items()) | p.labels
table = pd.DataFrame([{**keys, **row} for row in rows])
write_csv(table, Path(snakemake.output[0]))
