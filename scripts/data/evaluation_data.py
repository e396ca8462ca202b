"""Rule evaluation_data: cut an evaluation set into token windows."""

from pathlib import Path

from armor import logs
from armor.pipeline.data import evaluation_windows, save_windows
from armor.pipeline.models import load_tokenizer

logs.setup(snakemake.log[0])
p = snakemake.params
windows = evaluation_windows(load_tokenizer(Path(snakemake.input.model)), p.source, p.seqlen, p.max_windows)
save_windows(Path(snakemake.output[0]), windows)
