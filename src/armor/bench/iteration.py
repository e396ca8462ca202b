"""Benchmark: milliseconds per ARMOR iteration per layer shape and per whole decoder block.

A whole block's time, times the model's blocks and 20,000 iterations, projects a full run.

Run `python -m armor.bench.iteration [--out CSV]`; prints a table and writes one CSV row per case.
"""

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.optimizer.bcd import Options, Problem
from armor.pipeline.cpu import keep_freed_memory
from armor.inference.speed import environment, synchronize
from armor.reporting.tables import write_csv

log = logging.getLogger(__name__)

# The linear shapes (d_out, d_in) of one decoder block and how many layers share each shape.
BLOCKS = {
    "llama2-7b": {(4096, 4096): 4, (11008, 4096): 2, (4096, 11008): 1},
    "smollm2-135m": {(576, 576): 2, (192, 576): 2, (1536, 576): 2, (576, 1536): 1},
}
N_BLOCKS = {"llama2-7b": 32, "smollm2-135m": 30}
PROJECTED_ITERATIONS = 20000


def time_block(shapes: dict[tuple[int, int], int], block_size: int, device: torch.device, iterations: int) -> float:
    """Mean seconds of one full iteration (gradient, Adam step, selection, sparse step) over a block."""
    g = torch.Generator(device=device).manual_seed(0)
    problems = []
    for (d_out, d_in), count in shapes.items():
        w = torch.randn(count, d_out, d_in, generator=g, device=device)
        h = torch.rand(count, d_in, generator=g, device=device) + 0.1
        problems.append(Problem(w, h, Options(block_size=block_size, lr=1e-4)))

    def one_iteration() -> None:
        for prob in problems:
            active = torch.ones(prob.loss.shape[0], dtype=torch.bool, device=device)
            grads = prob.gradients()
            prob.continuous_step(grads, active)
            prob.sparse_step(prob.select(grads["core"]), active)

    one_iteration()  # warm-up: allocator, kernels
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        one_iteration()
    synchronize(device)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    """Time the configured cases on the CPU and, when present, the GPU; print and write CSV."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/armor_iteration.csv"))
    parser.add_argument("--cpu-iterations", type=int, default=5)
    parser.add_argument("--gpu-iterations", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    args = parser.parse_args()
    logs.setup()
    keep_freed_memory()
    cases = [("smollm2-135m", 32), ("smollm2-135m", 64), ("smollm2-135m", 128), ("llama2-7b", 128)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        n = args.gpu_iterations if device.type == "cuda" else args.cpu_iterations
        for model, b in cases:
            if model not in args.models:
                continue
            parts = [("block", BLOCKS[model])] + [(f"{o}x{i}", {(o, i): 1}) for o, i in BLOCKS[model]]
            for part, shapes in parts:
                seconds = time_block(shapes, b, device, n)
                hours = seconds * N_BLOCKS[model] * PROJECTED_ITERATIONS / 3600 if part == "block" else None
                rows.append(
                    {
                        "model": model, "part": part, "block_size": b, **environment(device),
                        "layers": sum(shapes.values()), "timed_iterations": n,
                        "ms_per_iteration": round(seconds * 1000, 2),
                        "projected_hours_20k_iterations": "" if hours is None else round(hours, 2),
                    }
                )
                log.info("%s %s b=%d on %s: %.1f ms per iteration", model, part, b, device.type, seconds * 1000)
    write_csv(pd.DataFrame(rows), args.out)
    print(f"{'model':14} {'part':11} {'b':>4} {'device':6} {'ms/iter':>9} {'whole model, 20k it (h)':>24}  device")
    for r in rows:
        print(f"{r['model']:14} {r['part']:11} {r['block_size']:>4} {r['device']:6} {r['ms_per_iteration']:>9} "
              f"{r['projected_hours_20k_iterations']:>24}  {r['device_name']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
