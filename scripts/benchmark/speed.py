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
reference = Path(snakemake.input.reference) if snakemake.input.reference else None
rows = model_speed(Path(snakemake.input.packed), reference, p.batch_sizes, p.prompt_len, p.decode_tokens, resolve_device(p.device), p.rounds)
keys = {k: v for k, v in snakemake.wildcards.items()}
table = pd.DataFrame([{**keys, **row} for row in rows])
write_csv(table, Path(snakemake.output[0]))
