"""Benchmark: peak host memory of a prune job against the number of decoder blocks in the model.

Saves random Llamas with the same blocks (hidden 512, MLP 1536) but 4 and 32 of them, runs the calibration pass,
then one prune job over blocks 0-3 of each in a fresh process, and reports that process's peak resident memory.

Run `python -m armor.bench.prune_memory [--out CSV]`.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from armor import logs
from armor.pipeline.calibration import calibrate
from armor.reporting.tables import write_csv

SHAPE = {"hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 4096}
PART = [0, 1, 2, 3]


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MB) of `python -c code` in a fresh process: its own VmHWM, which (unlike ru_maxrss)
    does not count the parent's pages it was forked with."""
    probe = "; print('VmHWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    result = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, check=True)
    return int(result.stdout.split("VmHWM")[-1].strip().strip("[]'")) / 1024


def measure(blocks: int, method: str, folder: Path) -> dict[str, float | int | str]:
    """Save a random model of `blocks` blocks, calibrate it, and prune blocks 0-3 in a fresh process."""
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", num_hidden_layers=blocks, **SHAPE)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder / "model")
    block_params = sum(p.numel() for p in model.model.layers[0].parameters())
    del model
    windows = torch.randint(0, SHAPE["vocab_size"], (8, 128), generator=torch.Generator().manual_seed(0))
    calibrate(folder / "model", torch.float32, windows, folder / "calibration", folder / "work", torch.device("cpu"), 8, hessian=False)
    options = {"seed": 0} | ({"block_size": 64, "iterations": 20} if method == "armor" else {})
    code = (
        "import torch; from pathlib import Path; from armor.pipeline.prune import prune_part; "
        f"prune_part(Path({str(folder / 'model')!r}), 'float32', {method!r}, {options!r}, {PART!r}, Path({str(folder / 'calibration')!r}), "
        f"Path({str(folder / 'ckpt')!r}), Path({str(folder / 'out')!r}), torch.device('cpu'))"
    )
    return {
        "model_blocks": blocks, "pruned_blocks": len(PART), "method": method, "block_params": block_params,
        "model_mb": round(sum(f.stat().st_size for f in (folder / "model").glob("*.safetensors")) / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb(code), 1),
    }


def main() -> None:
    """Measure 4- and 32-block models for Wanda and ARMOR; print and write CSV."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/prune_memory.csv"))
    args = parser.parse_args()
    logs.setup()
    rows = []
    for method in ("wanda", "armor"):
        for blocks in (4, 32):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(measure(blocks, method, Path(tmp)))
            print(rows[-1], flush=True)
    write_csv(pd.DataFrame(rows), args.out)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
