"""Bootstrap intervals over evaluation windows and paired comparisons against the best baseline."""

import json

import pytest
import torch

from armor.evaluation.intervals import interval, resampled_ppl, resamples
from armor.evaluation.perplexity import ppl_of
from armor.reporting.tables import main_table, run_table


def _nll(windows: int, mean: float, seed: int) -> torch.Tensor:
    """Summed NLLs of windows of 63 predicted tokens whose per-token NLL varies from window to window."""
    g = torch.Generator().manual_seed(seed)
    return 63 * (mean + 0.5 * torch.randn(windows, generator=g, dtype=torch.float64))


def test_interval_contains_the_perplexity_and_shrinks_with_more_windows():
    widths = []
    for windows in (12, 48, 400):
        nll = _nll(windows, 3.0, windows)
        low, high = interval(resampled_ppl(nll, 63, resamples(windows)))
        assert low < ppl_of(nll, 63) < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    nll = _nll(12, 3.0, 0)
    assert interval(resampled_ppl(nll, 63, resamples(12))) == interval(resampled_ppl(nll, 63, resamples(12)))  # seeded


def test_main_table_reports_intervals_and_the_paired_difference_to_the_best_baseline(tmp_path):
    runs = [{"model": "m", "method": m, "block_size": b} for m, b in (("dense", 0), ("wanda", 0), ("sparsegpt", 0), ("armor", 16))]
    base = _nll(24, 3.5, 1)
    nlls = {"dense": base - 63 * 0.5, "wanda": base + 63 * 0.3, "sparsegpt": base, "armor": base - 63 * 0.02}  # armor a little better on every window
    summaries, ppls, windows = [], [], []
    for run in runs:
        name = run["method"]
        summaries.append(tmp_path / f"{name}.summary.json")
        summaries[-1].write_text(json.dumps({"proxy_loss": 0.1, "zero_fraction": 0.5, "overhead": 0.0, "prune_seconds": 1.0, "calibration_mode": "independent"}))
        ppls.append(tmp_path / f"{name}.ppl.json")
        ppls[-1].write_text(json.dumps({"wiki": ppl_of(nlls[name], 63)}))
        windows.append(tmp_path / f"{name}.windows.json")
        windows[-1].write_text(json.dumps({"wiki": {"tokens_per_window": 63, "nll": nlls[name].tolist()}}))
    table = main_table(run_table(runs, summaries, ppls), windows).set_index("method")
    assert list(table.columns)[-5:] == ["ci_lo_wiki", "ci_hi_wiki", "best_wiki", "vs_best_lo_wiki", "vs_best_hi_wiki"]
    assert (table["ci_lo_wiki"] < table["ppl_wiki"]).all() and (table["ppl_wiki"] < table["ci_hi_wiki"]).all()
    assert (table["best_wiki"] == "sparsegpt").all()
    armor = table.loc["armor"]
    assert armor["vs_best_hi_wiki"] < 0  # paired: better on every window, so the whole interval is below zero
    assert armor["ci_lo_wiki"] < table.loc["sparsegpt", "ppl_wiki"]  # unpaired intervals overlap
    assert table.loc["sparsegpt", ["vs_best_lo_wiki", "vs_best_hi_wiki"]].tolist() == pytest.approx([0.0, 0.0])


def test_main_table_averages_seeds_and_bootstraps_their_mean(tmp_path):
    runs = [{"model": "m", "method": "dense", "block_size": 0, "seed": 0}] + [{"model": "m", "method": "armor", "block_size": 16, "seed": s} for s in (0, 1, 2)]
    summaries, ppls, windows = [], [], []
    for i, run in enumerate(runs):
        nll = _nll(24, 3.0 + 0.1 * i, 1)
        for name, paths, payload in (("summary", summaries, {"proxy_loss": 0.1 * i, "zero_fraction": 0.5, "overhead": 0.0, "prune_seconds": 1.0,
                                                              "calibration_mode": "independent"}),
                                     ("ppl", ppls, {"wiki": ppl_of(nll, 63)}), ("windows", windows, {"wiki": {"tokens_per_window": 63, "nll": nll.tolist()}})):
            paths.append(tmp_path / f"{i}.{name}.json")
            paths[-1].write_text(json.dumps(payload))
    table = main_table(run_table(runs, summaries, ppls), windows).set_index("method")
    armor = table.loc["armor"]
    seeds = [json.loads(p.read_text())["wiki"] for p in ppls[1:]]
    assert armor["seeds"] == 3 and table.loc["dense", "seeds"] == 1
    assert armor["ppl_wiki"] == pytest.approx(sum(seeds) / 3) and (armor["ppl_wiki_min"], armor["ppl_wiki_max"]) == pytest.approx((min(seeds), max(seeds)))
    assert armor["proxy_loss"] == pytest.approx(0.2)
    assert armor["ci_lo_wiki"] < armor["ppl_wiki"] < armor["ci_hi_wiki"]
