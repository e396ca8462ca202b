"""Benchmark: Gauss–Newton's iterations to the paper-level loss against layer width at b = 128, and from them the
projected cost of a Llama-2-7B decoder block per solver.

The widths SmolLM2-135M offers offline are the leading d_out × d_in slices of block 15's q_proj (576 × 576) and
down_proj (576 × 1536) with their own calibration weights h (the demo's windows): d_out = min(width, rows), d_in =
width. On each, Adam at the paper's setting (lr 1e-4, 5,000 iterations at b = 128) sets the target loss and
Gauss–Newton runs until it reaches it or has used `--cap` times Adam's time (one thread, same process). A power law
iterations = c · d_in^α fitted to Gauss–Newton's counts is extrapolated to Llama-2-7B's d_in (4096 and 11008), and
one iteration of each solver is timed at each Llama-2-7B linear shape (random weights: an iteration's time does not
depend on their values), so a block costs Σ over its linears of iterations × seconds per iteration: 5,000 for Adam,
the fit for Gauss–Newton. An iteration is timed as the mean of three after a warm-up one, so Gauss–Newton's includes
its sweep (after every step by default). Writes results/benchmarks/armor_width.csv (a row per slice), armor_width_llama2-7b.csv
(the projection), armor_width.md (both, with the fit) and results/figures/armor_width.{pdf,png}.

Run `python -m armor.bench.width [--widths 128 256 576 1152 1536] [--cap 0.5] [--threads 2] [--model llama2-7b]`.
"""

import argparse
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from armor import logs
from armor.bench.convergence import BLOCK, PAPER_ITERATIONS, PAPER_LR, Run, block_statistics, code_commit, trajectory
from armor.bench.iteration import MODELS, time_layer
from armor.optimizer.bcd import Options
from armor.pipeline.checkpoint import atomic_write_text
from armor.pipeline.cpu import tune_cpu
from armor.reporting.figures import width_figure
from armor.reporting.render import to_markdown
from armor.reporting.tables import write_csv
from armor.software import device_name

log = logging.getLogger(__name__)

LINEARS = ("self_attn.q_proj", "mlp.down_proj")  # the square attention layer and the widest input SmolLM2 has
BLOCK_SIZE = 128
SOLVERS = {"adam": {"solver": "adam", "lr": PAPER_LR}, "gauss_newton": {"solver": "gauss_newton"}}


def width_slices(weights: dict[str, torch.Tensor], h: dict[str, torch.Tensor], widths: list[int]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Per linear and width: its leading min(width, d_out) × width slice and the slice's h; widths beyond d_in skipped."""
    out = []
    for name in LINEARS:
        w = weights[name]  # (d_out, d_in)
        for width in widths:
            if width <= w.shape[1]:
                out.append((name, w[: min(width, w.shape[0]), :width].contiguous(), h[name][:width].contiguous()))
    return out


def to_paper_loss(w: torch.Tensor, h: torch.Tensor, cap: float, block_size: int = BLOCK_SIZE,
                  iterations: int = PAPER_ITERATIONS[BLOCK_SIZE]) -> dict:
    """Adam at the paper's learning rate on one layer for `iterations`, then Gauss–Newton to its loss: iterations and
    seconds of each."""
    adam = trajectory(Run({"w": w}, {"w": h}, Options(block_size=block_size, **SOLVERS["adam"])), "adam", "", iterations=iterations)[-1]
    gn = trajectory(Run({"w": w}, {"w": h}, Options(block_size=block_size, **SOLVERS["gauss_newton"])), "gauss_newton", "",
                    seconds=cap * adam["seconds"], target=adam["proxy_loss"])[-1]
    reached = gn["proxy_loss"] <= adam["proxy_loss"] * (1 + 1e-12)
    return {
        "target": adam["proxy_loss"], "adam_iterations": iterations, "adam_seconds": adam["seconds"],
        "gn_iterations": gn["iteration"] if reached else -1, "gn_seconds": gn["seconds"] if reached else float("nan"),
        "gn_final_loss": gn["proxy_loss"], "ratio_to_adam": gn["seconds"] / adam["seconds"] if reached else float("nan"),
    }


def power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(c, α) of y = c · x^α, least squares in log space."""
    alpha, log_c = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_c)), float(alpha)


def projection(fit: tuple[float, float], seconds: dict[tuple[str, tuple[int, int]], float], shapes: dict[tuple[int, int], int]) -> pd.DataFrame:
    """Per solver: iterations, seconds per iteration and hours for each linear shape of a block, and the block's total."""
    c, alpha = fit
    rows = []
    for solver in SOLVERS:
        for (d_out, d_in), count in shapes.items():
            iterations = PAPER_ITERATIONS[BLOCK_SIZE] if solver == "adam" else math.ceil(c * d_in**alpha)
            per_iteration = seconds[(solver, (d_out, d_in))]
            rows.append({"solver": solver, "shape": f"{d_out}x{d_in}", "layers": count, "iterations": iterations,
                         "s_per_iteration": per_iteration, "hours": count * iterations * per_iteration / 3600})
        block = [r for r in rows if r["solver"] == solver]
        rows.append({"solver": solver, "shape": "block", "layers": sum(r["layers"] for r in block), "iterations": float("nan"),
                     "s_per_iteration": float("nan"), "hours": sum(r["hours"] for r in block)})
    return pd.DataFrame(rows)


def report(slices: pd.DataFrame, fit: tuple[float, float], projected: pd.DataFrame, model: str, threads: int) -> str:
    """Markdown: the measured slices, the fit and the projected Llama-2-7B block, with what they rest on."""
    shown = slices.assign(**{
        "Adam s": slices["adam_seconds"].map(lambda x: f"{x:.1f}"), "target": slices["target"].map(lambda x: f"{x:.3g}"),
        "GN it.": slices["gn_iterations"].map(lambda x: str(x) if x >= 0 else "–"),
        "GN s": slices["gn_seconds"].map(lambda x: f"{x:.1f}" if not math.isnan(x) else "–"),
        "ratio": slices["ratio_to_adam"].map(lambda x: f"{x:.3f}" if not math.isnan(x) else "–"),
    })[["linear", "d_out", "d_in", "target", "Adam s", "GN it.", "GN s", "ratio"]]
    blocks = projected[projected["shape"] == "block"].set_index("solver")["hours"]
    table = projected.assign(iterations=projected["iterations"].map(lambda x: f"{x:,.0f}" if not math.isnan(x) else ""),
                             s_per_iteration=projected["s_per_iteration"].map(lambda x: f"{x:.2f}" if not math.isnan(x) else ""),
                             hours=projected["hours"].map(lambda x: f"{x:.2f}"))
    c, alpha = fit
    return (f"Block {BLOCK}'s slices of SmolLM2-135M at b = {BLOCK_SIZE}, {threads} thread(s), {device_name(torch.device('cpu'))}, "
            f"commit {code_commit()}: Adam (lr {PAPER_LR:g}, {PAPER_ITERATIONS[BLOCK_SIZE]:,} iterations) sets each target; "
            "Gauss–Newton's iterations and seconds to it (–: not within the cap).\n\n"
            + to_markdown(shown.astype(str))
            + f"\nFit over the reached slices: Gauss–Newton's iterations ≈ {c:.3g} · d_in^{alpha:.2f}.\n\n"
            f"Projected {model} decoder block (seconds per iteration measured at each shape on this machine; Adam at "
            f"{PAPER_ITERATIONS[BLOCK_SIZE]:,} iterations, Gauss–Newton at the fit's count at that d_in):\n\n"
            + to_markdown(table.astype(str))
            + f"\nGauss–Newton / Adam per block: {blocks['gauss_newton'] / blocks['adam']:.3f}. Assumes the iterations to the "
            "paper-level loss follow the same power law in d_in beyond the widths measured, and Adam needs the paper's "
            "count at every width.\n")


def main() -> None:
    """Measure the slices, fit, time the Llama-2-7B shapes, write the tables and the figure."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 576, 1152, 1536])
    parser.add_argument("--cap", type=float, default=0.5, help="Gauss–Newton stops at this multiple of Adam's time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="llama2-7b", choices=list(MODELS), help="the model whose block is projected")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/armor_width.csv"))
    parser.add_argument("--figure", type=Path, default=Path("results/figures/armor_width"))
    args = parser.parse_args()
    logs.setup()
    tune_cpu()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        weights, h = block_statistics(Path(tmp), (BLOCK,))[BLOCK]
    rows = []
    for name, w, hw in width_slices(weights, h, sorted(args.widths)):
        row = {"linear": name, "d_out": w.shape[0], "d_in": w.shape[1]} | to_paper_loss(w, hw, args.cap)
        log.info("%s %dx%d: Adam %.1f s to %.4g; Gauss–Newton %d iterations, %.1f s", name, *w.shape, row["adam_seconds"],
                 row["target"], row["gn_iterations"], row["gn_seconds"])
        rows.append(row)
        write_csv(pd.DataFrame(rows), args.out)  # a partial table survives an interrupted run
    slices = pd.DataFrame(rows)
    reached = slices[slices["gn_iterations"] > 0]
    fit = power_fit(reached["d_in"].to_numpy(float), reached["gn_iterations"].to_numpy(float))
    shapes = MODELS[args.model][1]
    seconds = {(solver, shape): time_layer(*shape, Options(block_size=BLOCK_SIZE, **settings), torch.device("cpu"), 3)
               for solver, settings in SOLVERS.items() for shape in shapes}
    projected = projection(fit, seconds, shapes)
    write_csv(projected, args.out.with_name(f"{args.out.stem}_{args.model}.csv"))
    atomic_write_text(args.out.with_suffix(".md"), report(slices, fit, projected, args.model, args.threads))
    width_figure(slices, fit, args.figure.with_suffix(".pdf"), args.figure.with_suffix(".png"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
