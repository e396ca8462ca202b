"""Collect per-run results into the workflow's tables."""

import json
from pathlib import Path

import pandas as pd

from armor.checkpoint import atomic_write_text

MAIN_COLUMNS = ["model", "method", "block_size"]
SUMMARY_COLUMNS = ["proxy_loss", "zero_fraction", "overhead", "prune_seconds", "calibration_mode"]


def main_table(runs: list[dict[str, str | int]], summaries: list[Path], perplexities: list[Path]) -> pd.DataFrame:
    """One row per run: its keys, ppl_<set> per evaluation set, and the pruning summary."""
    rows = []
    for run, summary_path, ppl_path in zip(runs, summaries, perplexities, strict=True):
        summary = json.loads(Path(summary_path).read_text())
        ppl = json.loads(Path(ppl_path).read_text())
        rows.append({**run, **{f"ppl_{k}": v for k, v in ppl.items()}, **{k: summary[k] for k in SUMMARY_COLUMNS}})
    return pd.DataFrame(rows)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV atomically."""
    atomic_write_text(Path(path), table.to_csv(index=False, float_format="%.6g"))
