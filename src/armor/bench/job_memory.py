"""Benchmark: peak host memory of a prune job and of a perplexity job against the number of decoder blocks.

Saves random Llamas with the same blocks (hidden 512, MLP 1536) but 4 and 32 of them and runs the calibration pass;
then, each in a fresh process, one prune job over blocks 0-3 (Wanda, ARMOR) and the perplexity of 8 windows with
the blocks streamed one at a time and with the whole model loaded; it reports each process's peak resident memory.

Run `python -m armor.bench.job_memory [--out CSV]`.
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
from armor.pipeline.data import save_windows
from armor.reporting.tables import write_csv

SHAPE = {"hidden_size": 512, "intermediate_size": 1536, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 4096}
PART = [0, 1, 2, 3]
BLOCK_COUNTS = (4, 32)


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MB) of `python -c code` in a fresh process: its own VmHWM, which (unlike ru_maxrss)
    does not count the parent's pages it was forked with."""
    probe = "; print('VmHWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    result = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, check=True)
    return int(result.stdout.split("VmHWM")[-1].strip().strip("[]'")) / 1024


def prepare(blocks: int, folder: Path) -> int:
    """Save a random model of `blocks` blocks with 8 windows of 128 tokens and calibrate it; its parameters per block."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", num_hidden_layers=blocks, **SHAPE), dtype=torch.float32)
    model.save_pretrained(folder / "model")
    block_params = sum(p.numel() for p in model.model.layers[0].parameters())
    del model
    windows = torch.randint(0, SHAPE["vocab_size"], (8, 128), generator=torch.Generator().manual_seed(0))
    save_windows(folder / "windows.safetensors", windows)
    calibrate(folder / "model", torch.float32, windows, folder / "calibration", folder / "work", torch.device("cpu"), 8, hessian=False)
    return block_params


def jobs(folder: Path) -> dict[tuple[str, str], str]:
    """The measured jobs by (job, variant): the Python code each runs."""
    model, windows = str(folder / "model"), str(folder / "windows.safetensors")
    head = "import torch; from pathlib import Path; from armor.pipeline.data import load_windows; "
    code = {}
    for method in ("wanda", "armor"):
        options = {"seed": 0} | ({"block_size": 64, "iterations": 20} if method == "armor" else {})
        code[("prune", method)] = (
            head + "from armor.pipeline.prune import prune_part; "
            f"prune_part(Path({model!r}), 'float32', {method!r}, {options!r}, {PART!r}, Path({str(folder / 'calibration')!r}), "
            f"Path({str(folder / method / 'ckpt')!r}), Path({str(folder / method / 'out')!r}), torch.device('cpu'))"
        )
    code[("perplexity", "streamed")] = (
        head + "from armor.evaluation.perplexity import streamed_perplexity; "
        f"streamed_perplexity(Path({model!r}), torch.float32, load_windows(Path({windows!r})), torch.device('cpu'), 1)"
    )
    code[("perplexity", "loaded")] = (
        head + "from transformers import AutoModelForCausalLM; from armor.evaluation.perplexity import perplexity; "
        f"perplexity(AutoModelForCausalLM.from_pretrained({model!r}, dtype=torch.float32).eval(), load_windows(Path({windows!r})), 1)"
    )
    return code


def main() -> None:
    """Measure every job on 4- and 32-block models; print and write CSV."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/job_memory.csv"))
    args = parser.parse_args()
    logs.setup()
    rows = []
    for blocks in BLOCK_COUNTS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            block_params = prepare(blocks, folder)
            model_mb = round(sum(f.stat().st_size for f in (folder / "model").glob("*.safetensors")) / 2**20, 1)
            for (job, variant), code in jobs(folder).items():
                rows.append({"model_blocks": blocks, "job": job, "variant": variant, "block_params": block_params,
                             "model_mb": model_mb, "peak_rss_mb": round(peak_rss_mb(code), 1)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).sort_values(["job", "variant", "model_blocks"], kind="stable")
    write_csv(table, args.out)
    print(table.to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
