"""Benchmark: ms per ARMOR iteration for every linear shape of the paper's models, and what the grid would take.

Each distinct (d_out, d_in) is timed as one layer (the solver's work scales with the layer count of a batch);
a decoder block's iteration is the sum over its linears. Times 20,000 iterations and the blocks of every model
give the ARMOR part of the paper grid in worker-hours; spread over 16 workers (prune parts are independent jobs)
that is the grid's wall time on 16 devices as fast as the one measured.

Run `python -m armor.bench.iteration [--models ...] [--block-size 128] [--solvers adam sweep]`.
"""

import argparse
import itertools
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.inference.speed import environment, synchronize
from armor.optimizer.adam import GuardCounts
from armor.optimizer.bcd import Options, iterate, solver_state
from armor.optimizer.problem import Problem
from armor.pipeline.cpu import tune_cpu
from armor.reporting.tables import write_csv

log = logging.getLogger(__name__)


def llama_block(hidden: int, mlp: int, kv: int) -> dict[tuple[int, int], int]:
    """Linear shapes (d_out, d_in) of a Llama/Qwen decoder block and how many layers have each."""
    shapes: dict[tuple[int, int], int] = {}
    for shape in [(hidden, hidden)] * 2 + [(kv, hidden)] * 2 + [(mlp, hidden)] * 2 + [(hidden, mlp)]:
        shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


# (decoder blocks, block shapes) of the paper grid (config.yaml) and of the demo model
MODELS = {
    "llama2-7b": (32, llama_block(4096, 11008, 4096)),
    "llama2-13b": (40, llama_block(5120, 13824, 5120)),
    "llama2-70b": (80, llama_block(8192, 28672, 1024)),
    "llama3-8b": (32, llama_block(4096, 14336, 1024)),
    "llama3-70b": (80, llama_block(8192, 28672, 1024)),
    "qwen2.5-7b": (28, llama_block(3584, 18944, 512)),
    "qwen2.5-14b": (48, llama_block(5120, 13824, 1024)),
    "qwen2.5-32b": (64, llama_block(5120, 27648, 1024)),
    "qwen2.5-72b": (80, llama_block(8192, 29568, 1024)),
    "smollm2-135m": (30, llama_block(576, 1536, 192)),
}
GRID = [m for m in MODELS if m != "smollm2-135m"]
PAPER_ITERATIONS, WORKERS = 20000, 16


def time_layer(d_out: int, d_in: int, opts: Options, device: torch.device, iterations: int) -> float:
    """Mean seconds of one full iteration (continuous step, selection, sparse steps) on one random layer."""
    g = torch.Generator(device=device).manual_seed(0)
    prob = Problem(torch.randn(1, d_out, d_in, generator=g, device=device), torch.rand(1, d_in, generator=g, device=device) + 0.1, opts.block_size)
    state = solver_state(prob, opts)
    counts = GuardCounts(torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device))
    active = torch.ones(1, dtype=torch.bool, device=device)
    iterate(prob, opts, active, state, counts)  # warm-up: allocator, kernels
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        iterate(prob, opts, active, state, counts)
    synchronize(device)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    """Time every shape on the CPU (and a GPU when present); write per-shape and per-model rows and the grid projection."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/armor_iteration.csv"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--solvers", nargs="+", default=["adam"], choices=["adam", "exact", "sweep", "gauss_newton"])
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    logs.setup()
    tune_cpu()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device, solver in itertools.product(devices, args.solvers):
        opts = Options(block_size=args.block_size, solver=solver)
        seconds: dict[tuple[int, int], float] = {}
        for model in args.models:
            for shape in MODELS[model][1]:
                if shape not in seconds:
                    seconds[shape] = time_layer(*shape, opts, device, args.iterations)
                    log.info("%s, %dx%d on %s: %.1f ms per iteration", solver, *shape, device.type, seconds[shape] * 1000)
        for model in args.models:
            blocks, shapes = MODELS[model]
            block_s = sum(count * seconds[shape] for shape, count in shapes.items())
            rows.append({
                "model": model, "blocks": blocks, "block_size": args.block_size, "solver": solver, **environment(device),
                "ms_per_block_iteration": round(block_s * 1000, 1),
                "hours_per_block_20k": round(block_s * PAPER_ITERATIONS / 3600, 2),
                "worker_hours_20k": round(block_s * PAPER_ITERATIONS * blocks / 3600, 1),
            })
    table = pd.DataFrame(rows)
    write_csv(table, args.out)
    print(table.to_string(index=False))
    for (device, solver), runs in table.groupby(["device_name", "solver"]):
        grid = runs[runs["model"].isin(GRID)]
        if len(grid) == len(GRID):
            longest_job = (grid["hours_per_block_20k"] * 4).max()  # a prune part holds 4 blocks
            wall = max(grid["worker_hours_20k"].sum() / WORKERS, longest_job)
            print(f"{device}, {solver}: ARMOR over the paper grid = {grid['worker_hours_20k'].sum():.0f} worker-hours; on {WORKERS} such "
                  f"workers about {wall:.0f} h ({wall / 24:.1f} days), longest prune job {longest_job:.0f} h")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
