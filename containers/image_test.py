"""The image's own test: the libraries import, and torch says which build it is (CPU, or the CUDA it was built for)."""

import json
from pathlib import Path

import lm_eval
import snakemake
import torch
import transformers

import armor

image = json.loads(Path("/etc/armor-image.json").read_text())
print(f"{image['name']} (from {image['source_commit']}): torch {torch.__version__}, torch.version.cuda {torch.version.cuda}, "
      f"CUDA available {torch.cuda.is_available()}, transformers {transformers.__version__}, lm-eval {lm_eval.__version__}, "
      f"snakemake {snakemake.__version__}, armor from {Path(armor.__file__).parent}")
expect_cuda = image["name"].endswith("cuda")
assert (torch.version.cuda is not None) == expect_cuda, f"{image['name']} has torch {torch.__version__}"
