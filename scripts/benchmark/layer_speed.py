"""Rule layer_speed: one linear at the paper's shapes, dense vs 2:4 vs ARMOR."""

from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.inference.speed import LAYER_SHAPES, layer_speed, timing_dtype
from armor.pipeline.runs import resolve_device
from armor.reporting.provenance import stamped
from armor.reporting.tables import write_csv

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
device = resolve_device(p.device)
dtype = timing_dtype(p.dtype, device, cpu="float32")
rows = layer_speed({m: LAYER_SHAPES[m] for m in p.models}, p.block_sizes, p.tokens, dtype, device, p.rounds)
write_csv(stamped(pd.DataFrame(rows), Path(snakemake.input.provenance)), Path(snakemake.output[0]))
