"""The width benchmark's parts: its slices, the fit, the projection and its report (the full run needs hours of CPU)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from armor.bench.width import power_fit, projection, report, to_paper_loss, width_slices
from armor.reporting.figures import width_figure


def test_width_slices_take_leading_rows_and_columns_with_their_h():
    weights = {"self_attn.q_proj": torch.arange(96.0).view(8, 12), "mlp.down_proj": torch.arange(160.0).view(8, 20)}
    h = {"self_attn.q_proj": torch.arange(12.0), "mlp.down_proj": torch.arange(20.0)}
    slices = width_slices(weights, h, [4, 12, 16, 32])
    assert [(name, tuple(w.shape)) for name, w, _ in slices] == [
        ("self_attn.q_proj", (4, 4)), ("self_attn.q_proj", (8, 12)),
        ("mlp.down_proj", (4, 4)), ("mlp.down_proj", (8, 12)), ("mlp.down_proj", (8, 16))]
    name, w, hw = slices[-1]
    assert torch.equal(w, weights[name][:, :16]) and torch.equal(hw, h[name][:16]) and w.is_contiguous()


def test_power_fit_recovers_the_law():
    x = np.array([128.0, 256.0, 576.0, 1536.0])
    c, alpha = power_fit(x, 3.0 * x**0.4)
    assert c == pytest.approx(3.0) and alpha == pytest.approx(0.4)


def test_projection_sums_a_block_from_iterations_and_seconds():
    shapes = {(8, 8): 2, (16, 8): 1}
    seconds = {("adam", (8, 8)): 0.5, ("adam", (16, 8)): 1.0, ("gauss_newton", (8, 8)): 2.0, ("gauss_newton", (16, 8)): 4.0}
    table = projection((2.0, 0.5), seconds, shapes).set_index(["solver", "shape"])
    gn_iterations = math.ceil(2.0 * 8**0.5)
    assert table.loc[("gauss_newton", "8x8"), "iterations"] == gn_iterations
    assert table.loc[("adam", "block"), "hours"] == pytest.approx(5000 * (2 * 0.5 + 1.0) / 3600)
    assert table.loc[("gauss_newton", "block"), "hours"] == pytest.approx(gn_iterations * (2 * 2.0 + 4.0) / 3600)


def test_to_paper_loss_reports_gauss_newton_against_adams_end_loss(tmp_path):
    g = torch.Generator().manual_seed(0)
    w, h = torch.randn(24, 40, generator=g), torch.rand(40, generator=g) + 0.1
    row = to_paper_loss(w, h, cap=50.0, block_size=8, iterations=30)
    assert row["adam_iterations"] == 30 and row["adam_seconds"] > 0
    assert row["gn_iterations"] > 0 and row["gn_final_loss"] <= row["target"] * (1 + 1e-12)
    assert row["ratio_to_adam"] == pytest.approx(row["gn_seconds"] / row["adam_seconds"])
    slices = pd.DataFrame([{"linear": "w", "d_out": 24, "d_in": 40} | row, {"linear": "w", "d_out": 24, "d_in": 80} | row | {
        "gn_iterations": -1, "gn_seconds": float("nan"), "ratio_to_adam": float("nan")}])
    projected = projection((1.0, 0.5), {(s, (8, 8)): 1.0 for s in ("adam", "gauss_newton")}, {(8, 8): 1})
    text = report(slices, (1.0, 0.5), projected, "tiny", threads=1)
    assert "| w | 24 | 80 |" in text and "≈ 1 · d_in^0.50" in text and "Projected tiny decoder block" in text
    width_figure(slices, (1.0, 0.5), tmp_path / "w.pdf", tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0
