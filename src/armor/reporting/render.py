"""Render the workflow's CSV tables as Markdown and LaTeX (booktabs) in the layout of the paper's tables."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from armor.methods.variants import LABELS as LABELS_OF
from armor.pipeline.checkpoint import atomic_write_text
from armor.reporting.provenance import COLUMNS as PROVENANCE_COLUMNS

LABELS = ("method", "label", "origin")  # the tables' columns naming a run's method; shown as one `Method` column
COST = ("prune_hours", "prune_core_hours", "prune_gpu_hours", "prune_peak_mb", "prune_device")  # shown as one `prune` column


def method_label(label: str, block_size: int) -> str:
    """Display name of a run: its method's or variant's label (the paper's or ours), with ARMOR's block size."""
    return f"{label} (b={block_size})" if block_size else label


def _by_method(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by model in the config's method order (as the table holds them), ARMOR by block size, each labelled by
    method_label in a `Method` column."""
    labels = table["label"] if "label" in table else table["method"].map(lambda m: LABELS_OF.get(m, m))
    order = {name: i for i, name in enumerate(dict.fromkeys(table["method"]))}
    table = table.assign(_order=table["method"].map(order)).sort_values(["model", "_order", "block_size"], kind="stable").drop(columns="_order")
    return table.assign(Method=[method_label(name, int(b)) for name, b in zip(labels.loc[table.index], table["block_size"], strict=True)])


def _fmt(value: object, digits: int) -> str:
    """A number with `digits` decimals (fewer from 100 up, '–' when missing), anything else as text."""
    if not isinstance(value, float):
        return str(value)
    if pd.isna(value):
        return "–"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _optional(table: pd.DataFrame, column: str) -> pd.Series:
    """A column of the table, or NaN throughout where the table has none (an interval or error not measured)."""
    return table[column] if column in table else pd.Series(float("nan"), index=table.index)


def _seed_spread(table: pd.DataFrame, column: str, digits: int, scale: float = 1.0) -> list[str]:
    """' [lowest–highest]' over the seeds of each row that ran more than one, else ''."""
    seeds, low, high = _optional(table, "seeds"), _optional(table, f"{column}_min"), _optional(table, f"{column}_max")
    return ["" if pd.isna(n) or n < 2 else f" [{_fmt(scale * lo, digits)}–{_fmt(scale * hi, digits)}]" for n, lo, hi in zip(seeds, low, high, strict=True)]


def unit_of(hours: float) -> tuple[float, str]:
    """The unit a duration reads best in: seconds, minutes or hours, and its size in hours."""
    return (1 / 3600, "s") if hours < 1 / 60 else (1 / 60, "min") if hours < 1 else (1.0, "h")


def prune_cost(table: pd.DataFrame) -> list[str]:
    """Each row's prune cost as shown: its prune jobs' wall time summed (GPU time where they ran on GPUs, with CPU
    core time on CPUs) and the largest job's peak memory; '–' where nothing was pruned or measured."""
    cells = []
    for _, row in table.iterrows():
        hours, peak = row.get("prune_hours", float("nan")), row.get("prune_peak_mb", float("nan"))
        if pd.isna(hours) or hours == 0:
            cells.append("–")
            continue
        size, unit = unit_of(hours)
        if row.get("prune_gpu_hours", 0) > 0:
            cells.append(f"{row['prune_gpu_hours'] / size:.3g} GPU-{unit}, {peak / 1024:.1f} GB")
        else:
            cells.append(f"{hours / size:.3g} {unit} ({row.get('prune_core_hours', float('nan')) / size:.3g} core-{unit}), {peak / 1024:.1f} GB")
    return cells


def main_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Perplexity (lower is better; the mean over calibration seeds, [lowest–highest seed] where several ran) with its
    bootstrap 95 % interval over evaluation windows in parentheses, and what pruning cost: one row per method, one column
    per model and evaluation set, one per model for its prune cost (its prune jobs' wall hours summed, GPU-hours where
    they ran on GPUs, with CPU core-hours, and the largest job's peak memory)."""
    table = _by_method(table)
    sets = [c for c in table.columns if c.startswith("ppl_") and not c.endswith(("_min", "_max"))]
    cells = table[["Method", "model"]].copy()
    for col in sets:
        name = col.removeprefix("ppl_")
        bounds = zip(table[col], _seed_spread(table, col, 2), _optional(table, f"ci_lo_{name}"), _optional(table, f"ci_hi_{name}"), strict=True)
        cells[col] = [_fmt(v, 2) + spread + ("" if pd.isna(lo) else f" ({_fmt(lo, 2)}–{_fmt(hi, 2)})") for v, spread, lo, hi in bounds]
    shown = sets + (["prune"] if "prune_hours" in table else [])
    cells["prune"] = prune_cost(table)
    wide = cells.pivot_table(index="Method", columns="model", values=shown, aggfunc="first", sort=False)
    wide = wide[[(col, model) for model in dict.fromkeys(table["model"]) for col in shown]]
    wide.columns = [f"{model} {col.removeprefix('ppl_')}" for col, model in wide.columns]
    return wide.reset_index().astype(str)


def downstream_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in % ± lm-eval's standard error (higher is better; the mean over calibration seeds, the mean score's
    [lowest–highest seed] where several ran): one row per model and method, one column per task and the mean, and the
    run's prune cost."""
    table = _by_method(table)
    tasks = [c for c in table.columns if c not in ("model", *LABELS, "block_size", "Method", "seeds", *COST)
             and not c.endswith(("_stderr", "_min", "_max"))]
    shown = table[["model", "Method"]].rename(columns={"model": "Model"})
    for task in tasks:
        spread = _seed_spread(table, task, 2, 100) if task == "mean" else [""] * len(table)
        shown["Mean" if task == "mean" else task] = [
            _fmt(100 * v, 2) + ("" if pd.isna(e) else f" ± {100 * e:.1f}") + s for v, e, s in zip(table[task], _optional(table, f"{task}_stderr"), spread, strict=True)
        ]
    if "prune_hours" in table:
        shown["prune"] = prune_cost(table)
    return shown.astype(str)


def blocksize_layout(table: pd.DataFrame) -> pd.DataFrame:
    """ARMOR by block size: wrapper overhead in %, perplexity and perplexity relative to NoWag-P and dense (means over
    calibration seeds, [lowest–highest seed] where several ran), and the run's prune cost."""
    table = table.copy()
    for col in [c for c in table.columns if "ppl_" in c and not c.endswith(("_min", "_max"))]:
        table[col] = [_fmt(v, 3) + s for v, s in zip(table[col], _seed_spread(table, col, 3), strict=True)]
    if "label" in table:
        table.insert(1, "Method", table["label"])
    if "prune_hours" in table:
        table["prune"] = prune_cost(table)
    table = table.drop(columns=[c for c in table.columns if c.endswith(("_min", "_max")) or c in ("seeds", *LABELS, *COST)])
    shown = table.rename(columns={"model": "Model", "block_size": "b", "proxy_loss": "proxy loss"})
    shown["overhead"] = [f"{100 * v:.2f}" for v in table["overhead"]]
    shown = shown.rename(columns={"overhead": "overhead (%)"})
    shown.columns = [c.replace("rel_ppl_", "rel. ppl ").replace("ppl_", "ppl ") for c in shown.columns]
    return shown.map(lambda v: _fmt(v, 3))


def iterations_layout(table: pd.DataFrame) -> pd.DataFrame:
    """ARMOR over iterations, per calibration seed: proxy loss relative to the start, and (relative) perplexity where
    measured."""
    measured = table.dropna(subset=[next(c for c in table.columns if c.startswith("ppl_"))]).copy()
    if "label" in measured:
        measured.insert(1, "Method", measured["label"])
    measured = measured.drop(columns=[c for c in LABELS if c in measured])
    shown = measured.rename(columns={"model": "Model", "block_size": "b", "proxy_loss": "proxy loss",
                                     "rel_proxy_loss": "rel. proxy loss", "rel_ppl": "rel. ppl"})
    shown.columns = [c.replace("ppl_", "ppl ") for c in shown.columns]
    return shown.map(lambda v: _fmt(v, 4))


def _versus_dense(table: pd.DataFrame, part: str) -> list[str]:
    """Each row's per-round speed ratio to dense: the median and its [lowest–highest round], a tie where that range
    holds 1, the reference itself as such, and no ratio where the pruned linears ran a dense kernel (2:4 speed not
    measured)."""
    cells = []
    for _, row in table.iterrows():
        mid, low, high = row[f"{part}_vs_dense"], row.get(f"{part}_vs_dense_min", float("nan")), row.get(f"{part}_vs_dense_max", float("nan"))
        if row["method"] == "dense":
            cells.append("reference")
        elif "semi-structured" not in str(row["kernel"]):
            cells.append("not measured: dense kernel")
        elif pd.isna(low):
            cells.append("–" if pd.isna(mid) else f"{mid:.2f}")
        else:
            cells.append(("tie " if low <= 1 <= high else "") + f"{mid:.2f} [{low:.2f}–{high:.2f}]")
    return cells


def speed_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Throughput in tokens/s (the median round, slowest–fastest), the dense model's in the same interleaved rounds, and
    the per-round ratio to it: the median [lowest–highest round], a tie where that range holds 1; where the pruned
    linears ran a dense kernel (no 2:4 kernel: CPUs, fp32, older GPUs) the ratio measures no 2:4 speed and is not
    shown. Also peak memory, packed size on disk, the dtype timed and how the pruned linears ran."""
    table = _by_method(table)

    def throughput(column: str, digits: int) -> list[str]:
        return [f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})" for m, lo, hi in zip(table[column], table[f"{column}_min"], table[f"{column}_max"])]

    def same_rounds(column: str, digits: int) -> list[str]:
        return ["–" if pd.isna(v) else f"{v:.{digits}f}" for v in _optional(table, column)]

    shown = pd.DataFrame(
        {
            "Model": table["model"], "Method": table["Method"], "batch": table["batch_size"],
            "prefill tok/s": throughput("prefill_tokens_per_s", 0),
            "dense prefill tok/s, same rounds": same_rounds("dense_prefill_tokens_per_s", 0),
            "prefill × dense": _versus_dense(table, "prefill"),
            "decode tok/s": throughput("decode_tokens_per_s", 1),
            "dense decode tok/s, same rounds": same_rounds("dense_decode_tokens_per_s", 1),
            "decode × dense": _versus_dense(table, "decode"),
            "peak MB": table["peak_memory_mb"].map(lambda v: f"{v:.0f}"),
            "disk MB": (table["bytes_on_disk"] / 2**20).map(lambda v: f"{v:.1f}"),
            "dtype": table["dtype"],
            "kernel": table["kernel"],
            "device": table["device_name"],
        }
    )
    return shown.astype(str)


LAYOUTS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "main": main_layout,
    "downstream": downstream_layout,
    "blocksize": blocksize_layout,
    "iterations": iterations_layout,
    "speed": speed_layout,
}


def to_markdown(shown: pd.DataFrame) -> str:
    """A GitHub Markdown table of string cells."""
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "|".join("---" for _ in shown.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in shown.astype(str).itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


def to_latex(shown: pd.DataFrame, caption: str, note: str = "") -> str:
    """A booktabs LaTeX table of string cells, first column left-aligned and the rest right-aligned; `note` below it."""
    spec = "l" * 2 + "r" * (len(shown.columns) - 2) if shown.columns[0] == "Model" else "l" + "r" * (len(shown.columns) - 1)
    body = [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in shown.astype(str).itertuples(index=False)]
    return "\n".join(
        [
            r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(_latex_escape(c) for c in shown.columns) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
            *([rf"\par\footnotesize {_latex_escape(note)}"] if note else []), r"\end{table}", "",
        ]
    )


def render(name: str, csv: Path, markdown: Path, latex: Path, note: str = "") -> pd.DataFrame:
    """Render one table CSV in its paper layout to Markdown and LaTeX files, with `note` (its provenance) under the
    table; returns the displayed frame."""
    layout = LAYOUTS[name]
    shown = layout(pd.read_csv(csv).drop(columns=list(PROVENANCE_COLUMNS), errors="ignore"))
    caption = " ".join((layout.__doc__ or name).split())
    atomic_write_text(markdown, f"{caption}\n\n{to_markdown(shown)}" + (f"\n{note}\n" if note else ""))
    atomic_write_text(latex, to_latex(shown, caption, note))
    return shown
