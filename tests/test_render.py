"""Tables rendered in the paper's layouts, and figures drawn from CSVs alone."""

import json

import pandas as pd
import pytest

from armor.reporting.figures import blocksize_figure, cost_figure, iterations_figure, pareto_figure
from armor.reporting.render import downstream_layout, prune_cost, render, speed_layout, to_latex, to_markdown
from armor.reporting.tables import blocksize_table, downstream_table, iterations_table, relative_ppl

MAIN = pd.DataFrame(
    {
        "model": ["m"] * 4, "method": ["dense", "nowag_p", "armor", "armor"], "block_size": [0, 0, 64, 16],
        "ppl_wiki": [10.0, 50.0, 30.0, 40.0], "proxy_loss": [0.0, 0.07, 0.05, 0.06], "zero_fraction": [0.0, 0.5, 0.5, 0.5],
        "overhead": [0.0, 0.0, 0.18, 0.05], "prune_seconds": [0.0, 1.0, 1.0, 1.0], "calibration_mode": ["independent"] * 4,
    }
)


def test_relative_perplexity_is_one_at_nowag_and_zero_at_dense():
    assert relative_ppl(50.0, 10.0, 50.0) == 1.0 and relative_ppl(10.0, 10.0, 50.0) == 0.0


def test_blocksize_table_orders_block_sizes():
    table = blocksize_table(MAIN, ["armor"])
    assert table["block_size"].tolist() == [16, 64]
    assert table["rel_ppl_wiki"].tolist() == pytest.approx([0.75, 0.5])


def test_iterations_table_fills_layers_that_stopped_early(tmp_path):
    trace = pd.DataFrame({"layer": ["a", "a", "a", "b", "b"], "iteration": [0, 10, 20, 0, 10], "proxy_loss": [4.0, 3.0, 2.0, 4.0, 1.0]})
    trace.to_csv(tmp_path / "trace.csv", index=False)
    (tmp_path / "snapshots.json").write_text('{"10": 35.0}')
    table = iterations_table(MAIN, [{"model": "m", "method": "armor", "block_size": 64}], [tmp_path / "trace.csv"], [tmp_path / "snapshots.json"], "wiki")
    assert table["proxy_loss"].tolist() == [8.0, 4.0, 3.0]  # b stopped at 10 and keeps 1.0
    assert table["rel_proxy_loss"].tolist() == [1.0, 0.5, 0.375]
    assert table["ppl_wiki"].tolist() == [50.0, 35.0, 30.0]
    assert table["rel_ppl"].tolist() == pytest.approx([1.0, 0.625, 0.5])


def test_main_table_renders_in_paper_layout(tmp_path):
    MAIN.to_csv(tmp_path / "main.csv", index=False)
    shown = render("main", tmp_path / "main.csv", tmp_path / "main.md", tmp_path / "main.tex")
    assert shown["Method"].tolist() == ["Dense", "NoWag-P", "ARMOR (b=16)", "ARMOR (b=64)"]
    assert shown["m wiki"].tolist() == ["10.00", "50.00", "40.00", "30.00"]
    markdown = (tmp_path / "main.md").read_text()
    assert "| Method | m wiki |" in markdown and "| ARMOR (b=64) | 30.00 |" in markdown
    latex = (tmp_path / "main.tex").read_text()
    assert r"\begin{tabular}{lr}" in latex and r"ARMOR (b=64) & 30.00 \\" in latex


def test_latex_escapes_and_uses_booktabs():
    shown = pd.DataFrame({"Model": ["a_b"], "Method": ["x"], "overhead (%)": ["4.6"]})
    latex = to_latex(shown, "50% of it")
    assert r"a\_b & x & 4.6" in latex and r"overhead (\%)" in latex and r"\caption{50\% of it}" in latex
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert to_markdown(shown).splitlines()[1] == "|---|---|---|"


def test_figures_are_drawn_from_tables(tmp_path):
    iterations = pd.DataFrame(
        {"model": ["m"] * 3, "block_size": [64] * 3, "iteration": [0, 10, 20], "proxy_loss": [8.0, 4.0, 3.0],
         "rel_proxy_loss": [1.0, 0.5, 0.375], "ppl_wiki": [50.0, None, 30.0], "rel_ppl": [1.0, None, 0.5]}
    )
    speed = pd.DataFrame(
        {"model": ["m"] * 4, "method": ["armor", "dense", "nowag_p", "armor"], "block_size": [64, 0, 0, 16], "batch_size": [8] * 4,
         "decode_tokens_per_s": [90.0, 100.0, 100.0, 95.0], "device_name": ["cpu"] * 4}
    )
    iterations_figure(iterations, tmp_path / "it.pdf", tmp_path / "it.png")
    blocksize_figure(blocksize_table(MAIN, ["armor"]), tmp_path / "bs.pdf", tmp_path / "bs.png")
    pareto_figure(MAIN, speed, tmp_path / "p.pdf", tmp_path / "p.png")
    for name in ["it", "bs", "p"]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000 and (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_downstream_table_carries_lm_evals_standard_errors(tmp_path):
    runs = [{"model": "m", "method": "dense", "block_size": 0}, {"model": "m", "method": "armor", "block_size": 16}]
    for i, run in enumerate(runs):
        (tmp_path / f"{i}.json").write_text(json.dumps({"a": {"score": 0.5, "stderr": 0.05}, "b": {"score": 0.7 + 0.1 * i, "stderr": 0.04}}))
    table = downstream_table(runs, [tmp_path / "0.json", tmp_path / "1.json"])
    assert list(table.columns) == ["model", "method", "label", "origin", "block_size", "seeds", "a", "b", "mean", "mean_min", "mean_max", "a_stderr", "b_stderr", "mean_stderr"]
    assert table["mean_stderr"].tolist() == pytest.approx([(0.05**2 + 0.04**2) ** 0.5 / 2] * 2)
    shown = downstream_layout(table)
    assert list(shown.columns) == ["Model", "Method", "a", "b", "Mean"]
    assert shown.iloc[1].tolist() == ["m", "ARMOR (b=16)", "50.00 ± 5.0", "80.00 ± 4.0", "65.00 ± 3.2"]


def test_downstream_table_averages_seeds_and_shows_their_spread(tmp_path):
    runs = [{"model": "m", "method": "armor", "block_size": 16, "seed": s} for s in (0, 1, 2)]
    for i in range(3):
        (tmp_path / f"{i}.json").write_text(json.dumps({"a": {"score": 0.4 + 0.1 * i, "stderr": 0.05}}))
    table = downstream_table(runs, [tmp_path / f"{i}.json" for i in range(3)])
    assert len(table) == 1 and table.loc[0, "seeds"] == 3
    assert table.loc[0, ["a", "mean", "mean_min", "mean_max", "a_stderr"]].tolist() == pytest.approx([0.5, 0.5, 0.4, 0.6, 0.05])
    assert downstream_layout(table).iloc[0].tolist() == ["m", "ARMOR (b=16)", "50.00 ± 5.0", "50.00 ± 5.0 [40.00–60.00]"]


def test_seed_spread_reaches_the_rendered_tables_and_figures(tmp_path):
    spread = MAIN.assign(seeds=[1, 3, 3, 3], ppl_wiki_min=MAIN["ppl_wiki"] - 1, ppl_wiki_max=MAIN["ppl_wiki"] + 2)
    spread.to_csv(tmp_path / "main.csv", index=False)
    shown = render("main", tmp_path / "main.csv", tmp_path / "main.md", tmp_path / "main.tex")
    assert shown["m wiki"].tolist() == ["10.00", "50.00 [49.00–52.00]", "40.00 [39.00–42.00]", "30.00 [29.00–32.00]"]
    blocksize = blocksize_table(spread, ["armor"])
    assert blocksize["rel_ppl_wiki_min"].tolist() == pytest.approx([29 / 40, 19 / 40]) and blocksize["seeds"].tolist() == [3, 3]
    blocksize.to_csv(tmp_path / "blocksize.csv", index=False)
    shown = render("blocksize", tmp_path / "blocksize.csv", tmp_path / "b.md", tmp_path / "b.tex")
    assert shown["rel. ppl wiki"].tolist() == ["0.750 [0.725–0.800]", "0.500 [0.475–0.550]"]
    blocksize_figure(blocksize, tmp_path / "bs.pdf", tmp_path / "bs.png")
    speed = pd.DataFrame({"model": ["m"] * 4, "method": spread["method"], "block_size": spread["block_size"], "batch_size": [8] * 4,
                          "decode_tokens_per_s": [100.0, 100.0, 90.0, 95.0], "device_name": ["cpu"] * 4})
    pareto_figure(spread, speed, tmp_path / "p.pdf", tmp_path / "p.png")
    iterations = pd.DataFrame({"model": ["m"] * 4, "block_size": [64] * 4, "seed": [0, 0, 1, 1], "iteration": [0, 10, 0, 10],
                               "rel_proxy_loss": [1.0, 0.5, 1.0, 0.4], "ppl_wiki": [50.0, 30.0, 52.0, 31.0], "rel_ppl": [1.0, 0.5, 1.0, 0.52]})
    iterations_figure(iterations, tmp_path / "it.pdf", tmp_path / "it.png")
    assert all((tmp_path / f"{n}.png").stat().st_size > 10_000 for n in ("bs", "p", "it"))


def test_variants_and_prune_costs_reach_the_rendered_tables_and_the_cost_figure(tmp_path):
    table = MAIN.assign(label=["Dense", "NoWag-P", "ARMOR", "ARMOR"], origin="paper")
    ours = table.iloc[[2]].assign(method="armor_gn", label="ARMOR, Gauss–Newton (ours)", origin="ours", ppl_wiki=20.0)
    table = pd.concat([table, ours], ignore_index=True).assign(
        prune_hours=[0.0, 0.004, 0.2, 1.5, 0.05], prune_core_hours=[0.0, 0.004, 0.19, 2.9, 0.05], prune_gpu_hours=0.0,
        prune_peak_mb=[0.0, 900.0, 1126.4, 1024.0, 1228.8], prune_device="cpu")
    table.to_csv(tmp_path / "main.csv", index=False)
    shown = render("main", tmp_path / "main.csv", tmp_path / "main.md", tmp_path / "main.tex")
    assert shown["Method"].tolist() == ["Dense", "NoWag-P", "ARMOR (b=16)", "ARMOR (b=64)", "ARMOR, Gauss–Newton (ours) (b=64)"]
    assert shown["m prune"].tolist() == ["–", "14.4 s (14.4 core-s), 0.9 GB", "1.5 h (2.9 core-h), 1.0 GB", "12 min (11.4 core-min), 1.1 GB",
                                         "3 min (3 core-min), 1.2 GB"]
    blocksize = blocksize_table(table, ["armor", "armor_gn"])
    assert blocksize["method"].tolist() == ["armor", "armor", "armor_gn"] and blocksize["prune_hours"].tolist() == [1.5, 0.2, 0.05]
    blocksize.to_csv(tmp_path / "blocksize.csv", index=False)
    shown = render("blocksize", tmp_path / "blocksize.csv", tmp_path / "b.md", tmp_path / "b.tex")
    assert shown["Method"].tolist() == ["ARMOR", "ARMOR", "ARMOR, Gauss–Newton (ours)"] and shown["prune"].iloc[2] == "3 min (3 core-min), 1.2 GB"
    gpu = table.assign(prune_gpu_hours=table["prune_hours"])
    assert prune_cost(gpu.iloc[[2, 3]]) == ["12 GPU-min, 1.1 GB", "1.5 GPU-h, 1.0 GB"]
    cost_figure(table, tmp_path / "c.pdf", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_speed_ratios_carry_their_round_range_show_ties_and_rank_no_dense_kernel():
    table = pd.DataFrame({
        "model": ["m"] * 4, "method": ["dense", "wanda", "armor", "sparsegpt"], "block_size": [0, 0, 64, 0], "batch_size": [8] * 4,
        "kernel": ["dense", "dense", "semi-structured", "semi-structured"],
        **{f"{part}_tokens_per_s{s}": [100.0] * 4 for part in ("prefill", "decode") for s in ("", "_min", "_max")},
        **{f"dense_{part}_tokens_per_s": [float("nan"), 100.0, 98.0, 101.0] for part in ("prefill", "decode")},
        **{f"{part}_vs_dense": [1.0, 1.1, 1.02, 1.3] for part in ("prefill", "decode")},
        **{f"{part}_vs_dense_min": [1.0, 1.05, 0.97, 1.21] for part in ("prefill", "decode")},
        **{f"{part}_vs_dense_max": [1.0, 1.2, 1.08, 1.38] for part in ("prefill", "decode")},
        "peak_memory_mb": [1.0] * 4, "bytes_on_disk": [2**20] * 4, "dtype": ["float16"] * 4, "device_name": ["gpu"] * 4,
    })
    shown = speed_layout(table)
    assert shown["decode × dense"].tolist() == ["reference", "not measured: dense kernel", "tie 1.02 [0.97–1.08]", "1.30 [1.21–1.38]"]
    assert shown["dense decode tok/s, same rounds"].tolist() == ["–", "100.0", "98.0", "101.0"]
