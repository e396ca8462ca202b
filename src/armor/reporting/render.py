"""Render the workflow's CSV tables as Markdown and LaTeX (booktabs) in the layout of the paper's tables."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from armor.pipeline.checkpoint import atomic_write_text
from armor.reporting.provenance import COLUMNS as PROVENANCE_COLUMNS

METHOD_NAMES = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT", "nowag_p": "NoWag-P", "armor": "ARMOR"}
METHOD_ORDER = list(METHOD_NAMES)


def method_label(method: str, block_size: int) -> str:
    """Display name of a run: the method, with ARMOR's block size."""
    name = METHOD_NAMES.get(method, method)
    return f"{name} (b={block_size})" if method == "armor" else name


def _by_method(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's method order, ARMOR by block size, each labelled by method_label."""
    order = table["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    table = table.assign(_order=order).sort_values(["model", "_order", "block_size"]).drop(columns="_order")
    return table.assign(Method=[method_label(m, int(b)) for m, b in zip(table["method"], table["block_size"], strict=True)])


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


def main_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Perplexity (lower is better; the mean over calibration seeds, [lowest–highest seed] where several ran) with its
    bootstrap 95 % interval over evaluation windows in parentheses: one row per method, one column per model and
    evaluation set."""
    table = _by_method(table)
    sets = [c for c in table.columns if c.startswith("ppl_") and not c.endswith(("_min", "_max"))]
    cells = table[["Method", "model"]].copy()
    for col in sets:
        name = col.removeprefix("ppl_")
        bounds = zip(table[col], _seed_spread(table, col, 2), _optional(table, f"ci_lo_{name}"), _optional(table, f"ci_hi_{name}"), strict=True)
        cells[col] = [_fmt(v, 2) + spread + ("" if pd.isna(lo) else f" ({_fmt(lo, 2)}–{_fmt(hi, 2)})") for v, spread, lo, hi in bounds]
    wide = cells.pivot_table(index="Method", columns="model", values=sets, aggfunc="first", sort=False)
    wide.columns = [f"{model} {col.removeprefix('ppl_')}" for col, model in wide.columns]
    return wide.reset_index().astype(str)


def downstream_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in % ± lm-eval's standard error (higher is better; the mean over calibration seeds, the mean score's
    [lowest–highest seed] where several ran): one row per model and method, one column per task and the mean."""
    table = _by_method(table)
    tasks = [c for c in table.columns if c not in ("model", "method", "block_size", "Method", "seeds") and not c.endswith(("_stderr", "_min", "_max"))]
    shown = table[["model", "Method"]].rename(columns={"model": "Model"})
    for task in tasks:
        spread = _seed_spread(table, task, 2, 100) if task == "mean" else [""] * len(table)
        shown["Mean" if task == "mean" else task] = [
            _fmt(100 * v, 2) + ("" if pd.isna(e) else f" ± {100 * e:.1f}") + s for v, e, s in zip(table[task], _optional(table, f"{task}_stderr"), spread, strict=True)
        ]
    return shown.astype(str)


def blocksize_layout(table: pd.DataFrame) -> pd.DataFrame:
    """ARMOR by block size: wrapper overhead in %, perplexity and perplexity relative to NoWag-P and dense (means over
    calibration seeds, [lowest–highest seed] where several ran)."""
    table = table.copy()
    for col in [c for c in table.columns if "ppl_" in c and not c.endswith(("_min", "_max"))]:
        table[col] = [_fmt(v, 3) + s for v, s in zip(table[col], _seed_spread(table, col, 3), strict=True)]
    table = table.drop(columns=[c for c in table.columns if c.endswith(("_min", "_max")) or c == "seeds"])
    shown = table.rename(columns={"model": "Model", "block_size": "b", "proxy_loss": "proxy loss"})
    shown["overhead"] = [f"{100 * v:.2f}" for v in table["overhead"]]
    shown = shown.rename(columns={"overhead": "overhead (%)"})
    shown.columns = [c.replace("rel_ppl_", "rel. ppl ").replace("ppl_", "ppl ") for c in shown.columns]
    return shown.map(lambda v: _fmt(v, 3))


def iterations_layout(table: pd.DataFrame) -> pd.DataFrame:
    """ARMOR over iterations, per calibration seed: proxy loss relative to the start, and (relative) perplexity where
    measured."""
    measured = table.dropna(subset=[next(c for c in table.columns if c.startswith("ppl_"))])
    shown = measured.rename(columns={"model": "Model", "block_size": "b", "proxy_loss": "proxy loss",
                                     "rel_proxy_loss": "rel. proxy loss", "rel_ppl": "rel. ppl"})
    shown.columns = [c.replace("ppl_", "ppl ") for c in shown.columns]
    return shown.map(lambda v: _fmt(v, 4))


def speed_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Throughput (tokens/s: median, slowest–fastest round; and the per-round ratio to dense) per method and batch
    size, peak memory, packed size on disk, the dtype timed and how the pruned linears ran."""
    table = _by_method(table)
    shown = pd.DataFrame(
        {
            "Model": table["model"], "Method": table["Method"], "batch": table["batch_size"],
            "prefill tok/s": [f"{m:.0f} ({lo:.0f}–{hi:.0f})" for m, lo, hi in zip(table["prefill_tokens_per_s"], table["prefill_tokens_per_s_min"], table["prefill_tokens_per_s_max"])],
            "prefill × dense": table["prefill_vs_dense"].map(lambda v: f"{v:.2f}"),
            "decode tok/s": [f"{m:.1f} ({lo:.1f}–{hi:.1f})" for m, lo, hi in zip(table["decode_tokens_per_s"], table["decode_tokens_per_s_min"], table["decode_tokens_per_s_max"])],
            "decode × dense": table["decode_vs_dense"].map(lambda v: f"{v:.2f}"),
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
