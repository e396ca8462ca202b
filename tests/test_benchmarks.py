"""The benchmark scripts run end to end at their smallest settings and write the rows they document (no timings asserted)."""

import subprocess
import sys

import pandas as pd


def _run(module: str, *args: str) -> None:
    """Run `python -m module args`; fail with its output."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_iteration_benchmark_projects_a_model(tmp_path):
    out = tmp_path / "iteration.csv"
    _run("armor.bench.iteration", "--models", "smollm2-135m", "--block-size", "64", "--iterations", "2", "--out", str(out))
    row = pd.read_csv(out).iloc[0]
    assert (row["model"], row["blocks"], row["block_size"], row["solver"], row["device"]) == ("smollm2-135m", 30, 64, "adam", "cpu")
    assert row["ms_per_block_iteration"] > 0 and row["worker_hours_20k"] > 0


def test_block_products_benchmark_covers_every_width_token_count_and_block_size(tmp_path):
    out = tmp_path / "block_products.csv"
    _run("armor.bench.block_products", "--rounds", "1", "--out", str(out))
    rows = pd.read_csv(out)
    assert len(rows) == 3 * 3 * 3 and set(rows["block_size"]) == {32, 64, 128}
    assert (rows[["bmm_ms", "einsum_ms"]] > 0).all().all()
