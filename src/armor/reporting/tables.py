"""Collect per-run results into the workflow's tables."""

import json
import math
from pathlib import Path

import pandas as pd
import torch

from armor.evaluation.intervals import interval, resampled_ppl, resamples
from armor.methods.variants import LABELS
from armor.pipeline.checkpoint import atomic_write_text

KEYS = ["model", "method", "label", "origin", "block_size"]  # a table cell: the seeds of a run are averaged into it
SUMMARY_COLUMNS = ["proxy_loss", "zero_fraction", "overhead", "prune_seconds", "calibration_mode"]
COST_COLUMNS = ["prune_hours", "prune_core_hours", "prune_gpu_hours", "prune_peak_mb", "prune_device"]
PART_COLUMNS = [f"prune_{part}_s" for part in ("read", "calibration", "method", "start", "solver", "refit")]  # in the order a prune job runs them


BASELINES = ("magnitude", "wanda", "sparsegpt", "nowag_p")  # what "the best baseline" of a model is chosen from


def _keys(run: dict[str, str | int]) -> dict[str, str | int]:
    """A run's keys and seed: its label the method's display name and seed 0 where the run names none."""
    return {"seed": 0, "label": LABELS.get(str(run["method"]), run["method"]), "origin": "", **run}


def prune_cost(summary: dict, benchmarks: list[Path]) -> dict[str, float | str]:
    """What a run's prune jobs cost, from Snakemake's benchmark files of its prune jobs (each job's last attempt):
    their wall hours summed, CPU core-hours, GPU-hours (one GPU per prune job, where they ran on CUDA), the largest
    job's peak resident memory in MB, and the device; NaN where a benchmark file is missing, 0 where there was no
    prune job (dense)."""
    found = [pd.read_csv(path, sep="\t").apply(pd.to_numeric, errors="coerce").iloc[-1] for path in benchmarks if Path(path).is_file()]
    if len(found) < len(benchmarks):
        return dict.fromkeys(COST_COLUMNS[:-1], float("nan")) | {"prune_device": summary.get("prune_device", "")}
    hours = sum(float(b["s"]) for b in found) / 3600
    return {"prune_hours": hours, "prune_core_hours": sum(float(b["cpu_time"]) for b in found) / 3600,
            "prune_gpu_hours": hours if summary.get("prune_gpu") else 0.0,
            "prune_peak_mb": max((float(b["max_rss"]) for b in found), default=0.0), "prune_device": summary.get("prune_device", "")}


def run_table(runs: list[dict[str, str | int]], summaries: list[Path], perplexities: list[Path], benchmarks: list[list[Path]] | None = None) -> pd.DataFrame:
    """One row per run: its keys, ppl_<set> per evaluation set, the pruning summary, given each run's prune job
    benchmark files its prune cost (`prune_cost`), and the seconds of each part of its prune jobs (prune_<part>_s)."""
    rows = []
    for i, (run, summary_path, ppl_path) in enumerate(zip(runs, summaries, perplexities, strict=True)):
        summary = json.loads(Path(summary_path).read_text())
        ppl = json.loads(Path(ppl_path).read_text())
        cost = prune_cost(summary, benchmarks[i]) if benchmarks is not None else {}
        parts = {f"prune_{part}_s": spent for part, spent in summary.get("prune_parts", {}).items()}
        rows.append({**_keys(run), **{f"ppl_{k}": v for k, v in ppl.items()}, **{k: summary[k] for k in SUMMARY_COLUMNS}, **cost, **parts})
    seen = dict.fromkeys(c for row in rows for c in row)  # every row's columns, in first-seen order
    columns = [c for c in seen if c not in (*KEYS, "seed", *PART_COLUMNS)] + [c for c in PART_COLUMNS if c in seen]
    return pd.DataFrame(rows)[[*KEYS, "seed", *columns]]


def seed_summary(per_seed: pd.DataFrame, spread: list[str]) -> pd.DataFrame:
    """One row per model × method × block size: how many seeds ran, each number's mean over them, and the lowest and
    highest seed of each `spread` column (<column>_min, <column>_max)."""
    groups = per_seed.groupby(KEYS, sort=False)
    columns = {"seeds": groups.size()}
    for col in [c for c in per_seed.columns if c not in (*KEYS, "seed")]:
        numeric = pd.api.types.is_numeric_dtype(per_seed[col])
        columns[col] = groups[col].mean() if numeric else groups[col].first()
        if col in spread:
            columns[f"{col}_min"], columns[f"{col}_max"] = groups[col].min(), groups[col].max()
    return pd.DataFrame(columns).reset_index()


def main_table(per_seed: pd.DataFrame, window_nll: list[Path] | None = None, baselines: tuple[str, ...] = BASELINES) -> pd.DataFrame:
    """One row per model × method × block size of run_table's rows, averaged over its seeds (`seed_summary`); with the
    windows' NLLs (in run_table's row order) also each set's bootstrap intervals against the best of `baselines`
    (`window_intervals`)."""
    table = seed_summary(per_seed, _ppl_columns(per_seed))
    return table if window_nll is None else pd.concat([table, window_intervals(per_seed, table, window_nll, baselines)], axis=1)


def window_intervals(per_seed: pd.DataFrame, table: pd.DataFrame, window_nll: list[Path], baselines: tuple[str, ...] = BASELINES) -> pd.DataFrame:
    """Per table row and evaluation set: the bootstrap 95 % interval of its seeds' mean perplexity over windows
    (ci_lo_<set>, ci_hi_<set>; every seed scored on the same resampled windows), the model's best baseline on that set
    (best_<set>: lowest perplexity of the methods named in `baselines`) and the interval of the row's perplexity minus
    that baseline's on the same resamples (vs_best_lo_<set>, vs_best_hi_<set>)."""
    scored = [json.loads(Path(path).read_text()) for path in window_nll]
    members = per_seed.groupby(KEYS).indices  # (model, method, block size) -> its seeds' rows
    runs_of = {i: members[tuple(table.loc[i, KEYS])] for i in table.index}
    columns: dict[str, dict[int, float | str]] = {}
    for name in (c.removeprefix("ppl_") for c in _ppl_columns(per_seed)):
        for _, rows in table.groupby("model", sort=False):
            first = scored[runs_of[rows.index[0]][0]][name]
            draws = resamples(len(first["nll"]))
            boot = {i: torch.stack([resampled_ppl(torch.tensor(scored[j][name]["nll"]), first["tokens_per_window"], draws) for j in runs_of[i]]).mean(0)
                    for i in rows.index}
            candidates = rows[rows["method"].isin(baselines)]
            best = candidates[f"ppl_{name}"].idxmin() if len(candidates) else None
            for i in rows.index:
                low, high = interval(boot[i])
                vs_low, vs_high = interval(boot[i] - boot[best]) if best is not None else (float("nan"), float("nan"))
                values = {"ci_lo": low, "ci_hi": high, "best": table.at[best, "method"] if best is not None else "",
                          "vs_best_lo": vs_low, "vs_best_hi": vs_high}
                for key, value in values.items():
                    columns.setdefault(f"{key}_{name}", {})[i] = value
    return pd.DataFrame(columns, index=table.index)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV atomically."""
    atomic_write_text(Path(path), table.to_csv(index=False, float_format="%.6g"))


def downstream_table(runs: list[dict[str, str | int]], scores: list[Path], summaries: list[Path] | None = None,
                     benchmarks: list[list[Path]] | None = None) -> pd.DataFrame:
    """One row per model × method × block size: each task's score (a fraction) and their unweighted mean, then
    lm-eval's standard error of each (`<task>_stderr`; the mean's from the tasks' as independent estimates), each
    averaged over the seeds, and the mean score's lowest and highest seed (mean_min, mean_max); given the runs'
    summaries and prune benchmark files, also their prune cost (`prune_cost`)."""
    rows = []
    for i, (run, path) in enumerate(zip(runs, scores, strict=True)):
        cost = prune_cost(json.loads(Path(summaries[i]).read_text()), benchmarks[i]) if summaries is not None and benchmarks is not None else {}
        results = json.loads(Path(path).read_text())
        tasks = {task: s["score"] for task, s in results.items()}
        errors = {f"{task}_stderr": s["stderr"] for task, s in results.items()}
        mean_stderr = math.sqrt(sum(e * e for e in errors.values())) / len(errors)
        rows.append({**_keys(run), **tasks, "mean": sum(tasks.values()) / len(tasks), **errors, "mean_stderr": mean_stderr, **cost})
    return seed_summary(pd.DataFrame(rows), ["mean"])


def _ppl_columns(table: pd.DataFrame) -> list[str]:
    """The perplexity columns of a table, one per evaluation set."""
    return [c for c in table.columns if c.startswith("ppl_")]


def _reference(table: pd.DataFrame, run: pd.Series | dict, method: str, column: str) -> float:
    """A reference run's value (dense or nowag_p) for a run's model, and its seed where the table has seeds and the
    method reads calibration; NaN when that method was not run."""
    rows = table[(table["model"] == run["model"]) & (table["method"] == method)]
    if "seed" in table and method != "dense":
        rows = rows[rows["seed"] == run["seed"]]
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


def relative_ppl(ppl: float, dense: float, start: float) -> float:
    """(ppl - dense) / (NoWag-P - dense): 1 at ARMOR's starting point, 0 at the dense model (the paper's figure 3)."""
    return (ppl - dense) / (start - dense)


def blocksize_table(main: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """The main table's rows of the ARMOR methods (ARMOR and its variants) by block size, with wrapper overhead and
    relative perplexity per set (with its lowest and highest seed where the main table has them)."""
    armor = main[main["method"].isin(methods)]
    armor = armor.assign(_order=armor["method"].map(methods.index)).sort_values(["model", "_order", "block_size"], kind="stable")
    rows = []
    for _, run in armor.iterrows():
        row = {**{key: run[key] for key in KEYS if key in run}, "block_size": int(run["block_size"]), **({"seeds": int(run["seeds"])} if "seeds" in run else {}),
               "overhead": run["overhead"], "proxy_loss": run["proxy_loss"], **{c: run[c] for c in COST_COLUMNS if c in run}}
        for col in [c for c in main.columns if c.startswith("ppl_") and not c.endswith(("_min", "_max"))]:
            dense, start = (_reference(main, run, m, col) for m in ("dense", "nowag_p"))
            for suffix in ("", "_min", "_max"):
                if f"{col}{suffix}" in main:
                    row[f"{col}{suffix}"] = run[f"{col}{suffix}"]
                    row[f"rel_{col}{suffix}"] = relative_ppl(run[f"{col}{suffix}"], dense, start)
        rows.append(row)
    return pd.DataFrame(rows)


def total_proxy_loss(trace: pd.DataFrame) -> pd.Series:
    """Sum over layers of the proxy loss at each traced iteration; a layer that stopped early keeps its last loss."""
    wide = trace.pivot_table(index="iteration", columns="layer", values="proxy_loss").sort_index().ffill()
    return wide.sum(axis=1)


def iterations_table(per_seed: pd.DataFrame, runs: list[dict[str, str | int]], traces: list[Path], snapshots: list[Path], dataset: str) -> pd.DataFrame:
    """Per ARMOR run (seed included) and traced iteration: proxy loss relative to the start, and perplexity where it
    was measured.

    Perplexity comes from the run's snapshots, from NoWag-P on the same seed at iteration 0 (ARMOR's starting point)
    and from the finished run at its last iteration; `rel_ppl` is relative_ppl of it. `per_seed` is run_table's.
    """
    col = f"ppl_{dataset}"
    frames = []
    for run, trace_path, snapshot_path in zip(runs, traces, snapshots, strict=True):
        loss = total_proxy_loss(pd.read_csv(trace_path))
        ppl = {int(k): v for k, v in json.loads(Path(snapshot_path).read_text()).items()}
        run = _keys(run)
        final = per_seed[(per_seed["block_size"] == int(run["block_size"])) & (per_seed["method"] == run["method"])]
        dense, start = (_reference(per_seed, run, m, col) for m in ("dense", "nowag_p"))
        ppl |= {0: start, int(loss.index[-1]): _reference(final, run, run["method"], col)}
        frame = pd.DataFrame({"iteration": loss.index, "proxy_loss": loss.values, "rel_proxy_loss": loss.values / loss.iloc[0]})
        frame[col] = frame["iteration"].map(ppl)
        frame["rel_ppl"] = relative_ppl(frame[col], dense, start)
        frames.append(frame.assign(model=run["model"], method=run["method"], label=run["label"],
                                   block_size=int(run["block_size"]), seed=int(run["seed"])))
    table = pd.concat(frames, ignore_index=True)
    return table[["model", "method", "label", "block_size", "seed", "iteration", "proxy_loss", "rel_proxy_loss", col, "rel_ppl"]]
