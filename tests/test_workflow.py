"""The whole DAG on the tiny random Llama, through the real Snakemake."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from armor.pipeline.assemble import run_metadata
from armor.pipeline.faults import FAULT_ENV
from armor.pipeline.runs import block_tensors
from armor.sparsity import is_24

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
METHODS = ["dense", "sparsegpt", "nowag_p", "armor", "armor_gn"]  # armor_gn: a variant of armor (ours)


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real Snakemake on the tiny config in workdir."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args, "--configfile", str(TINY)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def workflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny-model workflow run: every table and figure (the default target)."""
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_main_table_has_a_row_per_method(workflow_dir):
    table = pd.read_csv(workflow_dir / "results/tables/main.csv")
    assert list(table.columns) == ["model", "method", "label", "origin", "block_size", "seeds", "ppl_news", "ppl_news_min", "ppl_news_max", "proxy_loss", "zero_fraction",
                                   "overhead", "prune_seconds", "calibration_mode", "prune_hours", "prune_core_hours", "prune_gpu_hours", "prune_peak_mb",
                                   "prune_device", "prune_read_s", "prune_calibration_s", "prune_method_s", "prune_start_s", "prune_solver_s", "prune_refit_s", "ci_lo_news", "ci_hi_news", "best_news", "vs_best_lo_news", "vs_best_hi_news", "commit", "dirty", "config_hash"]
    assert ((table["ci_lo_news"] < table["ppl_news"]) & (table["ppl_news"] < table["ci_hi_news"])).all()
    windows = json.loads((workflow_dir / "results/runs/tiny-llama/armor/b16-s0/window_nll.json").read_text())["news"]
    assert len(windows["nll"]) == 4 and windows["tokens_per_window"] == 63  # max_windows 4 of seqlen 64
    assert table["method"].tolist() == METHODS
    assert table["block_size"].tolist() == [0, 0, 0, 16, 16]
    assert table["label"].tolist()[-2:] == ["ARMOR", "ARMOR, Gauss–Newton (ours)"] and table["origin"].tolist() == ["paper"] * 4 + ["ours"]
    assert (table["model"] == "tiny-llama").all()
    dense = table.set_index("method").loc["dense"]
    assert dense["proxy_loss"] == 0 and dense["zero_fraction"] < 0.01
    pruned = table[table["method"] != "dense"]
    assert (pruned["zero_fraction"] == 0.5).all()
    assert ((pruned["proxy_loss"] > 0) & (pruned["proxy_loss"] < 1)).all()
    assert (table["ppl_news"] > 1).all()
    by_method = table.set_index("method")
    assert by_method.loc["armor", "proxy_loss"] < by_method.loc["nowag_p", "proxy_loss"]
    assert by_method.loc["armor", "overhead"] == pytest.approx(16 * (2 * 128 + 2 * 96 + 3 * 192) / 36864)  # b·(d_out + d_in) over d_out·d_in
    assert by_method.loc["armor_gn", "overhead"] == by_method.loc["armor", "overhead"]
    assert (by_method.drop(["armor", "armor_gn"])["overhead"] == 0).all()
    modes = {"dense": "none", "sparsegpt": "sequential", "nowag_p": "independent", "armor": "independent", "armor_gn": "independent"}
    assert by_method["calibration_mode"].to_dict() == modes


def test_every_run_carries_its_prune_cost_from_the_benchmark_files(workflow_dir):
    table = pd.read_csv(workflow_dir / "results/tables/main.csv").set_index("method")
    assert table.loc["dense", ["prune_hours", "prune_core_hours", "prune_gpu_hours", "prune_peak_mb"]].tolist() == [0, 0, 0, 0]
    pruned = table.drop("dense")
    assert (pruned["prune_hours"] > 0).all() and (pruned["prune_peak_mb"] > 100).all() and (pruned["prune_gpu_hours"] == 0).all()
    parts = workflow_dir / "results/benchmarks/prune/tiny-llama/armor/b16-s0"
    benchmarks = [pd.read_csv(parts / f"part{p}.tsv", sep="\t").iloc[-1] for p in (0, 1)]  # 3 blocks in parts of 2 and 1
    assert table.loc["armor", "prune_hours"] == pytest.approx(sum(b["s"] for b in benchmarks) / 3600, rel=1e-5)
    assert table.loc["armor", "prune_peak_mb"] == pytest.approx(max(b["max_rss"] for b in benchmarks), rel=1e-5)
    assert table.loc["armor", "prune_device"].endswith("cores")  # the CPU
    for name in ("downstream", "blocksize"):
        assert (pd.read_csv(workflow_dir / f"results/tables/{name}.csv")["prune_hours"] > 0).any()
        assert re.search(r"\d core-(s|min|h)\), 0\.\d GB", (workflow_dir / f"results/tables/{name}.md").read_text())


def test_armor_trace_is_written_and_monotone(workflow_dir):
    trace = pd.read_csv(workflow_dir / "results/runs/tiny-llama/armor/b16-s0/trace.csv")
    assert trace["layer"].nunique() == 3 * 7
    assert sorted(trace["iteration"].unique()) == [0, 5, 10, 15, 20]
    for _, layer in trace.groupby("layer"):
        assert (layer["proxy_loss"].diff().dropna() <= 0).all()


def test_every_saved_pruned_linear_is_24(workflow_dir):
    for method in METHODS[1:]:
        armor = method.startswith("armor")
        pruned = workflow_dir / f"results/runs/tiny-llama/{method}/b{16 if armor else 0}-s0/pruned"
        sparse = [v for block in block_tensors(pruned) for k, v in block.items() if k.endswith(".core" if armor else ".weight")]
        assert len(sparse) == 3 * 7
        assert all(is_24(w) for w in sparse), method
        assert run_metadata(pruned)["method"] == ("armor" if armor else method)  # the method a variant runs
    assert run_metadata(workflow_dir / "results/runs/tiny-llama/armor_gn/b16-s0/pruned")["options"]["solver"] == "gauss_newton"
    assert not (workflow_dir / "results/runs/tiny-llama/armor/b16-s0/parts").exists()  # temporary parts are gone


def test_logs_and_benchmarks_are_written(workflow_dir):
    assert (workflow_dir / "results/logs/prune/tiny-llama/sparsegpt/b0-s0/chain.log").read_text().count("block 3/3") == 1
    assert (workflow_dir / "results/benchmarks/prune/tiny-llama/sparsegpt/b0-s0/chain.tsv").exists()
    parts = workflow_dir / "results/logs/prune/tiny-llama/armor/b16-s0"
    assert "block 2 (1/1 of this part) pruned" in (parts / "part1.log").read_text()  # blocks 0-1 in part 0, block 2 in part 1
    assert (workflow_dir / "results/logs/calibrate/tiny-llama/s0.log").read_text().count("calibration block 3/3 recorded") == 1


@pytest.mark.slow  # CI: a killed prune job's resume in test_pipeline, a timed-out one's through SLURM in test_slurm
def test_killed_prune_job_resumes_on_rerun(workflow_dir, tmp_path):
    """Kill the prune job after one block; the next snakemake call finishes with identical weights."""
    reference = list(block_tensors(workflow_dir / "results/runs/tiny-llama/sparsegpt/b0-s0/pruned"))
    shutil.copytree(workflow_dir / "results", tmp_path / "results")
    shutil.rmtree(tmp_path / "results/runs/tiny-llama/sparsegpt")
    target = "results/runs/tiny-llama/sparsegpt/b0-s0/summary.json"

    killed = snakemake(tmp_path, target, env={FAULT_ENV: "1"})
    assert killed.returncode != 0
    assert (tmp_path / "results/checkpoints/tiny-llama/sparsegpt/b0-s0/chain/block_0000.safetensors").exists()
    assert not (tmp_path / target).exists()

    resumed = snakemake(tmp_path, target)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "block 1/3 resumed from checkpoint" in (tmp_path / "results/logs/prune/tiny-llama/sparsegpt/b0-s0/chain.log").read_text()
    weights = list(block_tensors(tmp_path / "results/runs/tiny-llama/sparsegpt/b0-s0/pruned"))
    assert [w.keys() for w in weights] == [r.keys() for r in reference]
    assert all(torch.equal(w[k], r[k]) for w, r in zip(weights, reference) for k in r)


def test_build_and_speed_tables(workflow_dir):
    speed = pd.read_csv(workflow_dir / "results/tables/speed.csv")
    assert len(speed) == len(METHODS) * 2  # batch sizes 1 and 2
    assert (speed[["prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_mb", "bytes_on_disk"]] > 0).all().all()
    assert (speed["decode_tokens_per_s_min"] <= speed["decode_tokens_per_s"]).all() and (speed["decode_tokens_per_s"] <= speed["decode_tokens_per_s_max"]).all()
    dense = speed[speed["method"] == "dense"]
    assert (dense["decode_vs_dense"] == 1).all() and (dense["prefill_vs_dense"] == 1).all()  # the reference is not timed against itself
    assert speed["decode_vs_dense"].notna().all()
    timed = speed[speed["method"] != "dense"]
    assert ((timed["decode_vs_dense_min"] <= timed["decode_vs_dense"]) & (timed["decode_vs_dense"] <= timed["decode_vs_dense_max"])).all()
    assert timed["dense_decode_tokens_per_s"].notna().all() and speed.loc[speed["method"] == "dense", "dense_decode_tokens_per_s"].isna().all()
    rendered = (workflow_dir / "results/tables/speed.md").read_text()
    assert "not measured: dense kernel" in rendered and "| reference |" in rendered  # the CPU has no 2:4 kernel: nothing is ranked by it
    assert {"device", "device_name", "gpus", "sparse_backend", "image", "torch", "transformers"} <= set(speed.columns) and (speed["image"] == "host").all()
    assert (speed["sparse_backend"] == "none").all() and (speed["sparse_backend_reason"] == "no 2:4 kernels on cpu").all()
    assert (speed["dtype"] == "float32").all()  # speed.model_dtype applies on a GPU only
    disk = speed.drop_duplicates("method").set_index("method")["bytes_on_disk"]
    assert disk["sparsegpt"] < disk["armor"] < disk["dense"]
    layers = pd.read_csv(workflow_dir / "results/tables/layer_speed.csv")
    assert set(layers["variant"]) == {"dense", "2:4", "armor_b64"}
    assert sorted(layers["tokens"].unique()) == [1, 8] and len(layers) == 3 * 3 * 2 and (layers["kernel"] == layers["variant"].map({"dense": "dense", "2:4": "dense", "armor_b64": "folded"})).all()  # CPU: no 2:4 kernel
    assert (layers["ms_min"] <= layers["ms"]).all() and (layers["ms"] <= layers["ms_max"]).all()
    card = (workflow_dir / "results/runs/tiny-llama/armor/b16-s0/packed/README.md").read_text()
    assert "base_model:" in card and "ARMOR (b = 16)" in card and "| analogy |" in card


def test_downstream_table_scores_every_run(workflow_dir):
    table = pd.read_csv(workflow_dir / "results/tables/downstream.csv")
    assert list(table.columns) == ["model", "method", "label", "origin", "block_size", "seeds", "analogy", "news_cloze", "mean", "mean_min", "mean_max", "analogy_stderr",
                                   "news_cloze_stderr", "mean_stderr", "prune_hours", "prune_core_hours", "prune_gpu_hours", "prune_peak_mb", "prune_device",
                                   "commit", "dirty", "config_hash"]
    assert (table[["analogy_stderr", "news_cloze_stderr", "mean_stderr"]] >= 0).all().all()  # lm-eval's, carried over (NaN fails)
    assert table["method"].tolist() == METHODS
    assert table[["analogy", "news_cloze"]].isin([i / 8 for i in range(9)]).all().all()  # 8 items per task
    assert table["mean"].tolist() == pytest.approx(table[["analogy", "news_cloze"]].mean(axis=1).tolist())
    tasks = workflow_dir / "results/data/lm_tasks"
    assert sorted(p.name for p in tasks.iterdir() if not p.name.startswith(".")) == ["analogy.jsonl", "analogy.yaml", "loader.py", "news_cloze.jsonl", "news_cloze.yaml"]


def test_armor_tables_relate_to_nowag_and_dense(workflow_dir):
    main = pd.read_csv(workflow_dir / "results/tables/main.csv").set_index("method")
    every = pd.read_csv(workflow_dir / "results/tables/iterations.csv")
    ours = every[every["method"] == "armor_gn"]
    assert ours["iteration"].tolist() == [0, 2, 4] and ours["rel_ppl"].iloc[-1] == pytest.approx(
        (main.loc["armor_gn", "ppl_news"] - main.loc["dense", "ppl_news"]) / (main.loc["nowag_p", "ppl_news"] - main.loc["dense", "ppl_news"]), rel=1e-5)
    iterations = every[every["method"] == "armor"]
    assert iterations["iteration"].tolist() == [0, 5, 10, 15, 20]
    measured = iterations.dropna(subset=["ppl_news"]).set_index("iteration")
    assert measured.index.tolist() == [0, 10, 20]  # NoWag-P start, the snapshot, the finished run
    assert measured.loc[0, "ppl_news"] == pytest.approx(main.loc["nowag_p", "ppl_news"])
    assert measured.loc[20, "ppl_news"] == pytest.approx(main.loc["armor", "ppl_news"])
    assert measured.loc[0, "rel_ppl"] == pytest.approx(1.0)
    assert (iterations["rel_proxy_loss"].diff().dropna() <= 0).all() and iterations["rel_proxy_loss"].iloc[0] == 1.0
    blocksize = pd.read_csv(workflow_dir / "results/tables/blocksize.csv")
    assert blocksize["method"].tolist() == ["armor", "armor_gn"]
    dense, start = main.loc["dense", "ppl_news"], main.loc["nowag_p", "ppl_news"]
    assert blocksize["rel_ppl_news"].iloc[0] == pytest.approx((main.loc["armor", "ppl_news"] - dense) / (start - dense), rel=1e-5)  # CSVs keep 6 digits


def test_tables_are_rendered_and_figures_drawn(workflow_dir):
    for table in ["main", "speed", "downstream", "blocksize", "iterations"]:
        markdown = (workflow_dir / f"results/tables/{table}.md").read_text()
        assert "| Method |" in markdown or "| Model |" in markdown
        latex = (workflow_dir / f"results/tables/{table}.tex").read_text()
        assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    for figure in ["pareto", "cost", "iterations", "blocksize"]:
        assert (workflow_dir / f"results/figures/{figure}.pdf").read_bytes().startswith(b"%PDF")
        assert (workflow_dir / f"results/figures/{figure}.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_redrawing_a_figure_reads_only_tables(workflow_dir):
    pruned = workflow_dir / "results/runs/tiny-llama/armor/b16-s0/pruned/model-00001-of-00003.safetensors"
    before = pruned.stat().st_mtime_ns
    (workflow_dir / "results/figures/pareto.png").unlink()
    plan = snakemake(workflow_dir, "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-4000:]
    jobs = {line.split()[0] for line in plan.stdout.splitlines() if re.fullmatch(r"\w+\s+\d+", line.strip())}
    assert jobs == {"all", "pareto_figure", "total"}, plan.stdout
    redraw = snakemake(workflow_dir)
    assert redraw.returncode == 0, redraw.stderr[-4000:]
    assert (workflow_dir / "results/figures/pareto.png").exists() and pruned.stat().st_mtime_ns == before


def test_report_holds_every_table_and_figure(workflow_dir):
    result = snakemake(workflow_dir, "--report", str(workflow_dir / "report.html"))
    assert result.returncode == 0, result.stderr[-4000:]
    html = (workflow_dir / "report.html").read_text()
    for name in ["main.csv", "downstream.csv", "blocksize.csv", "iterations.csv", "speed.csv", "layer_speed.csv", "pareto.png", "cost.png", "iterations.png",
                 "blocksize.png"]:
        assert name in html, name


def test_dense_equivalent_export_is_a_rule(workflow_dir):
    target = "results/runs/tiny-llama/armor/b16-s0/dense_equivalent"
    result = snakemake(workflow_dir, target)
    assert result.returncode == 0, result.stderr[-4000:]
    config = (workflow_dir / target / "config.json").read_text()
    assert '"model_type": "llama"' in config and "auto_map" not in config
    assert (workflow_dir / target / "model.safetensors.index.json").exists() and (workflow_dir / target / "README.md").exists()


@pytest.mark.parametrize(("edit", "method"), [pytest.param(lambda c: c["armor"].update(iterations=21), "armor", marks=pytest.mark.slow),
                                              (lambda c: c["variants"]["armor_gn"]["settings"].update(cg_steps=6), "armor_gn")],
                         ids=["method", "variant"])
def test_a_settings_change_reruns_the_jobs_it_determines(workflow_dir, tmp_path, edit, method):
    changed = yaml.safe_load(TINY.read_text())
    edit(changed)
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workflow_dir), "-n", "--configfile", str(tmp_path / "changed.yaml")]
    dry = subprocess.run(cmd, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-4000:]
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", dry.stdout, re.S | re.M)
    params_changed = {rule for rule, body in jobs if "Params have changed since last execution" in body}
    assert "prune_part" in params_changed and "assemble" in {rule for rule, _ in jobs}
    run_jobs = [body for rule, body in jobs if "method=" in body]
    assert run_jobs and all(f"method={method}," in body for body in run_jobs)  # the other variant's runs are kept


def test_every_table_names_the_commit_and_config_it_came_from(workflow_dir):
    record = json.loads((workflow_dir / "results/provenance.json").read_text())
    assert record["commit"] != "" and len(record["config_hash"]) == 16 and record["image"] == "host"
    tables = sorted((workflow_dir / "results/tables").glob("*.csv"))
    assert len(tables) == 7  # main, main_by_seed, downstream, blocksize, iterations, speed, layer_speed
    for path in tables:
        stamp = pd.read_csv(path, dtype={"commit": str, "config_hash": str})[["commit", "dirty", "config_hash"]].drop_duplicates()
        assert stamp.values.tolist() == [[record["commit"], record["dirty"], record["config_hash"]]], path.name
    rendered = sorted((workflow_dir / "results/tables").glob("*.md")) + sorted((workflow_dir / "results/tables").glob("*.tex"))
    assert len(rendered) == 2 * 5
    for path in rendered:
        text = path.read_text()
        assert f"commit {record['commit'][:12]}" in text and f"config {record['config_hash']}" in text, path.name


@pytest.mark.slow  # CI: the seed spread through tables and figures in test_render
def test_a_second_seed_is_a_run_of_its_own_on_its_own_calibration_draw(workflow_dir, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["calibration"]["seeds"] = [0, 1]
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    target = "results/runs/tiny-llama/nowag_p/b0-s1/perplexity.json"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workflow_dir), "--cores", "2", target, "--configfile", str(tmp_path / "seeds.yaml")]
    plan = subprocess.run([*cmd, "-n"], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-4000:]
    seeds = set(re.findall(r"seed=(\d+)", plan.stdout))
    assert seeds == {"1"}, plan.stdout  # seed 0's windows, statistics and runs are kept
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    data = workflow_dir / "results/data/tiny-llama"
    draws = [load_file(data / f"calibration-s{s}.safetensors") for s in (0, 1)]
    assert not torch.equal(next(iter(draws[0].values())), next(iter(draws[1].values())))
    runs = workflow_dir / "results/runs/tiny-llama/nowag_p"
    ppl = [json.loads((runs / f"b0-s{s}/perplexity.json").read_text())["news"] for s in (0, 1)]
    assert ppl[0] != ppl[1]
