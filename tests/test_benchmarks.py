"""The benchmark scripts run end to end at their smallest settings and write the rows they document (no timings asserted)."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from armor.bench.convergence import main as convergence_main, readme_summary, solvers, summary, time_to_target


def _run(module: str, *args: str) -> None:
    """Run `python -m module args`; fail with its output."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_iteration_benchmark_projects_a_model(tmp_path):
    out = tmp_path / "iteration.csv"
    _run("armor.bench.iteration", "--models", "smollm2-135m", "--block-size", "64", "--iterations", "2", "--solvers", "adam", "sweep", "--out", str(out))
    rows = pd.read_csv(out)
    assert list(rows["solver"]) == ["adam", "sweep"]
    row = rows.iloc[0]
    assert (row["model"], row["blocks"], row["block_size"], row["device"]) == ("smollm2-135m", 30, 64, "cpu")
    assert (rows["ms_per_block_iteration"] > 0).all() and (rows["worker_hours_20k"] > 0).all()


def test_time_to_target_gives_every_solver_a_row_against_adams_loss():
    g = torch.Generator().manual_seed(0)
    w, h = torch.randn(24, 40, generator=g), torch.rand(40, generator=g) + 0.1
    part = {"part": "random", "block": 0, "linear": "w", "block_size": 8, "threads": 1}
    curves = pd.DataFrame(time_to_target(w, h, part, iterations=40, cap=5.0, lr=1e-3))
    table = summary(curves).set_index("solver")
    assert list(table.index) == list(solvers(1e-3)) == ["adam lr=0.001", "sweep", "gauss_newton", "gauss_newton diagonal", "exact"]
    adam = table.loc["adam lr=0.001"]
    assert adam["iterations_to_target"] == 40 and adam["ratio_to_adam"] == 1.0
    sweep = table.loc["sweep"]  # reached Adam's loss, so its curve stopped there
    assert sweep["final_loss"] <= sweep["target"] and sweep["seconds_to_target"] == sweep["final_seconds"]
    readme = readme_summary(table.reset_index(), "40 Adam iterations (lr 0.001)")
    ratio = table.loc["gauss_newton", "ratio_to_adam"]
    assert f"| 0.w | {f'{ratio:.3f}' if ratio == ratio else '–'} |" in readme and "| linear | b = 8, 1 thread |" in readme and "`make bench-armor` at commit unknown" in readme
    assert "time to the proxy loss of 40 Adam iterations (lr 0.001) as a fraction" in readme


@pytest.mark.slow
def test_block_products_benchmark_covers_every_width_token_count_and_block_size(tmp_path):
    out = tmp_path / "block_products.csv"
    _run("armor.bench.block_products", "--rounds", "1", "--out", str(out))
    rows = pd.read_csv(out)
    assert len(rows) == 3 * 3 * 3 and set(rows["block_size"]) == {32, 64, 128}
    assert (rows[["bmm_ms", "einsum_ms"]] > 0).all().all()


def test_a_paper_convergence_run_narrowed_to_a_block_size_outside_the_papers_is_refused(monkeypatch, capsys):
    """`--paper --block-sizes 32` stops before any work, naming the paper's block sizes."""
    monkeypatch.setattr(sys, "argv", ["convergence", "--paper", "--block-sizes", "32"])
    with pytest.raises(SystemExit) as stop:
        convergence_main()
    assert stop.value.code == 2
    assert "--block-sizes must be among 16, 64, 128, got 32" in capsys.readouterr().err
