"""The paper's figures, drawn from the workflow's CSV tables only (never from pruning outputs)."""

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from armor.methods.variants import LABELS
from armor.reporting.render import method_label, unit_of


def _save(fig: Figure, pdf: Path, png: Path) -> None:
    """Write a figure as PDF and PNG (through temporary names, so a failed draw leaves nothing behind)."""
    for path in (pdf, png):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)


def _spread(values: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean, min and max of `y` over seeds at each `x` (one row per x, sorted)."""
    return values.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()


def iterations_figure(iterations: pd.DataFrame, pdf: Path, png: Path) -> None:
    """Figure 3 left: relative proxy loss (line) and relative perplexity (markers) of ARMOR over iterations; the mean
    over calibration seeds, with a band (loss) or bars (perplexity) from the lowest to the highest seed."""
    ppl_col = next(c for c in iterations.columns if c.startswith("ppl_"))
    fig = Figure(figsize=(9, 3.4), layout="tight")
    ax_loss, ax_ppl = fig.subplots(1, 2, sharex=True)
    labels = iterations["label"] if "label" in iterations else pd.Series("ARMOR", index=iterations.index)
    for (model, name, b), run in iterations.assign(_label=labels).groupby(["model", "_label", "block_size"], sort=False):
        label = f"{model}, {method_label(name, b)}"
        loss = _spread(run, "iteration", "rel_proxy_loss")
        line = ax_loss.plot(loss.index, loss["mean"], label=label)[0]
        ax_loss.fill_between(loss.index, loss["min"], loss["max"], color=line.get_color(), alpha=0.2, lw=0)
        ppl = _spread(run.dropna(subset=[ppl_col]), "iteration", "rel_ppl")
        ax_ppl.errorbar(ppl.index, ppl["mean"], yerr=[ppl["mean"] - ppl["min"], ppl["max"] - ppl["mean"]], marker="o", capsize=3, label=label)
    ax_loss.set(xlabel="iteration", ylabel="proxy loss / initial proxy loss", title="Relative proxy loss")
    ax_ppl.set(xlabel="iteration", ylabel="(ppl − dense) / (NoWag-P − dense)",
               title=f"Relative perplexity ({ppl_col.removeprefix('ppl_')})")
    ax_ppl.axhline(1.0, color="grey", lw=0.8, ls="--")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("ARMOR over iterations (1 = NoWag-P start, 0 = dense)")
    _save(fig, pdf, png)


def blocksize_figure(blocksize: pd.DataFrame, pdf: Path, png: Path) -> None:
    """Figure 3 right: ARMOR's relative perplexity on every evaluation set across block sizes, per model (the mean over
    calibration seeds, with bars from the lowest to the highest seed where the table has them)."""
    rel_cols = [c for c in blocksize.columns if c.startswith("rel_ppl_") and not c.endswith(("_min", "_max"))]
    fig = Figure(figsize=(5, 3.4), layout="tight")
    ax = fig.subplots()
    labels = blocksize["label"] if "label" in blocksize else pd.Series("ARMOR", index=blocksize.index)
    for (model, name), runs in blocksize.assign(_label=labels).groupby(["model", "_label"], sort=False):
        runs = runs.sort_values("block_size")
        for col in rel_cols:
            ax.errorbar(runs["block_size"], runs[col], yerr=_seed_bars(runs, col), marker="o", capsize=3, label=f"{model}, {name}, {col.removeprefix('rel_ppl_')}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(blocksize["block_size"].unique()), labels=[str(b) for b in sorted(blocksize["block_size"].unique())])
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="block size b of A and B", ylabel="(ppl − dense) / (NoWag-P − dense)",
           title="ARMOR relative perplexity across block sizes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, pdf, png)


def _seed_bars(rows: pd.DataFrame, column: str) -> list[pd.Series] | None:
    """Error bars from a mean column down to its lowest and up to its highest seed, when the table has them."""
    if f"{column}_min" not in rows:
        return None
    return [rows[column] - rows[f"{column}_min"], rows[f"{column}_max"] - rows[column]]


def pareto_figure(main: pd.DataFrame, speed: pd.DataFrame, pdf: Path, png: Path) -> None:
    """Perplexity on the first evaluation set against decode speed at the largest benchmarked batch, per run: relative
    to the dense model timed in the same rounds where it was, else in tokens/s; bars from the lowest to the highest
    calibration seed where the table has them. Where no pruned model ran a 2:4 kernel the figure says that 2:4 speed
    was not measured instead of ranking methods by a dense kernel's noise."""
    ppl_col = next(c for c in main.columns if c.startswith("ppl_"))
    batch = int(speed["batch_size"].max())
    timed = speed[speed["batch_size"] == batch].drop(columns=["label", "origin"], errors="ignore")
    rows = timed.merge(main, on=["model", "method", "block_size"])
    relative = "decode_vs_dense" in rows and rows["decode_vs_dense"].notna().all()
    x = "decode_vs_dense" if relative else "decode_tokens_per_s"
    fig = Figure(figsize=(5.5, 3.8), layout="tight")
    ax = fig.subplots()
    device = ", ".join(sorted(rows["device_name"].unique()))
    pruned = rows[rows["method"] != "dense"]
    if "kernel" in pruned and not pruned["kernel"].astype(str).str.contains("semi-structured").any():  # no ranking by a speed 2:4 never had
        ax.axis("off")
        ax.text(0.5, 0.5, f"2:4 speed not measured on {device}:\nevery pruned model ran a dense kernel\n(no 2:4 kernel here; "
                "make bench-gpu times them on a GPU)", ha="center", va="center", fontsize=10, transform=ax.transAxes)
        ax.set_title("Perplexity against 2:4 speed")
        _save(fig, pdf, png)
        return
    for model, runs in rows.groupby("model"):
        ax.errorbar(runs[x], runs[ppl_col], yerr=_seed_bars(runs, ppl_col), fmt="o", capsize=3, label=model)
        for i, (_, run) in enumerate(runs.sort_values(x).iterrows()):  # alternate sides: close points
            ax.annotate(method_label(run.get("label", LABELS.get(run["method"], run["method"])), int(run["block_size"])), (run[x], run[ppl_col]),
                        textcoords="offset points", xytext=(4, 4 if i % 2 else -10), fontsize=7)
    ax.set_yscale("log")
    xlabel = f"decode speed at batch {batch}, " + ("× dense (interleaved rounds)" if relative else "tokens/s")
    ax.set(xlabel=xlabel, ylabel=f"perplexity ({ppl_col.removeprefix('ppl_')}, log)", title=f"Perplexity against speed on {device}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, pdf, png)


def cost_figure(main: pd.DataFrame, pdf: Path, png: Path) -> None:
    """Quality against what pruning cost: each run's perplexity on the first evaluation set relative to NoWag-P and dense
    (1 = NoWag-P, 0 = dense; the perplexity itself where either is missing) against its prune jobs' hours summed (GPU-
    hours where they ran on GPUs), a point per method, variant and block size, per model."""
    ppl_col = next(c for c in main.columns if c.startswith("ppl_") and not c.endswith(("_min", "_max")))
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    relative = {"dense", "nowag_p"} <= set(main["method"])
    size, unit = unit_of(float(main["prune_hours"].max()))
    for model, runs in main.groupby("model", sort=False):
        if relative:
            dense, start = (float(runs.loc[runs["method"] == m, ppl_col].iloc[0]) for m in ("dense", "nowag_p"))
            y = (runs[ppl_col] - dense) / (start - dense)
        else:
            y = runs[ppl_col]
        hours = runs["prune_gpu_hours"].where(runs["prune_gpu_hours"] > 0, runs["prune_hours"]) / size
        shown = hours > 0  # dense prunes nothing
        ax.scatter(hours[shown], y[shown], label=model)
        for h, v, (_, run) in zip(hours[shown], y[shown], runs[shown].iterrows()):
            ax.annotate(method_label(run.get("label", LABELS.get(run["method"], run["method"])), int(run["block_size"])), (h, v), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    costs = main["prune_hours"][main["prune_hours"] > 0]
    wide = len(costs) and costs.max() > 20 * costs.min()  # a log axis only where costs span more than 20x
    if wide:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    gpu = bool((main["prune_gpu_hours"] > 0).any())
    words = {"s": "seconds", "min": "minutes", "h": "hours"}
    ax.set(xlabel=f"prune cost: {'GPU-' if gpu else ''}{words[unit]} of its prune jobs" + (", log" if wide else ""),
           ylabel=f"(ppl − dense) / (NoWag-P − dense), {ppl_col.removeprefix('ppl_')}" if relative else f"perplexity, {ppl_col.removeprefix('ppl_')}",
           title="Quality against prune cost")
    if relative:
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, pdf, png)


def convergence_figure(curves: pd.DataFrame, pdf: Path, png: Path) -> None:
    """ARMOR's solvers per block size and thread count: proxy loss over Adam's (lr 1e-3) end loss against wall time
    over Adam's, one line per linear, so every solver's time to Adam's loss reads off where its lines cross 1."""
    panels = list(dict.fromkeys(zip(curves["block_size"], curves["threads"])))
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="tight")
    colours = {solver: f"C{i}" for i, solver in enumerate(dict.fromkeys(curves["solver"]))}
    for ax, (b, threads) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        rows = curves[(curves["block_size"] == b) & (curves["threads"] == threads)]
        for (_, solver), curve in rows.groupby(["part", "solver"], sort=False):
            ax.plot(curve["seconds"] / curve["adam_seconds"], curve["proxy_loss"] / curve["target"], color=colours[solver], lw=0.9, alpha=0.8)
        for solver, colour in colours.items():
            ax.plot([], [], color=colour, label=solver)
        ax.axhline(1, color="grey", lw=0.8, ls="--")
        ax.axvline(0.1, color="grey", lw=0.8, ls=":", label="1/10 of Adam's time")
        ax.set(xlabel="wall time / Adam's 3,000 iterations", ylabel="proxy loss / Adam's at 3,000", title=f"b = {b}, {threads} thread(s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("ARMOR's solvers on SmolLM2 (block 15's linears and block 0's q_proj)")
    _save(fig, pdf, png)


def width_figure(slices: pd.DataFrame, fit: tuple[float, float], pdf: Path, png: Path) -> None:
    """Gauss–Newton's iterations to the paper-level loss against d_in, a point per layer slice, with the fitted power
    law drawn out to Llama-2-7B's widths (4096, 11008)."""
    fig = Figure(figsize=(5, 3.6), layout="tight")
    ax = fig.subplots()
    reached = slices[slices["gn_iterations"] > 0]
    for linear, rows in reached.groupby("linear", sort=False):
        ax.plot(rows["d_in"], rows["gn_iterations"], "o", label=linear)
    c, alpha = fit
    x = pd.Series([reached["d_in"].min(), 11008])
    ax.plot(x, c * x**alpha, color="grey", lw=1, ls="--", label=f"{c:.3g} · d_in^{alpha:.2f}")
    for width in (4096, 11008):
        ax.axvline(width, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="d_in", ylabel="iterations to Adam's loss", title="Gauss–Newton at b = 128 against layer width")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, pdf, png)
