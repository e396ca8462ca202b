"""Rule calibration_data: draw the calibration token windows."""

from pathlib import Path

from armor import logs
from armor.pipeline.data import calibration_windows, save_windows
from armor.pipeline.models import load_tokenizer

logs.setup(snakemake.log[0])
p = snakemake.params
windows = calibration_windows(load_tokenizer(Path(snakemake.input.model)), p.source, p.nsamples, p.seqlen, p.seed)
save_windows(Path(snakemake.output[0]), windows)
