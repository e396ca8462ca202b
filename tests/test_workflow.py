"""The whole DAG on the tiny random Llama, through the real Snakemake."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from armor.blockwise import FAULT_ENV
from armor.checkpoint import load_tensors
from armor.sparsity import is_24

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
METHODS = ["dense", "magnitude", "wanda", "sparsegpt", "nowag_p", "armor"]


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real Snakemake on the tiny config in workdir."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args, "--configfile", str(TINY)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def workflow_dir(tmp_path_factory) -> Path:
    """A finished tiny-model workflow run."""
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, "results/tables/main.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_main_table_has_a_row_per_method(workflow_dir):
    table = pd.read_csv(workflow_dir / "results/tables/main.csv")
    assert list(table.columns) == ["model", "method", "block_size", "ppl_news", "proxy_loss", "zero_fraction", "overhead", "prune_seconds", "calibration_mode"]
    assert table["method"].tolist() == METHODS
    assert table["block_size"].tolist() == [0, 0, 0, 0, 0, 16]
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
    assert (by_method.drop("armor")["overhead"] == 0).all()


def test_armor_trace_is_written_and_monotone(workflow_dir):
    trace = pd.read_csv(workflow_dir / "results/runs/tiny-llama/armor/b16/trace.csv")
    assert trace["layer"].nunique() == 3 * 7
    assert sorted(trace["iteration"].unique()) == [0, 5, 10, 15, 20]
    for _, layer in trace.groupby("layer"):
        assert (layer["proxy_loss"].diff().dropna() <= 0).all()


def test_every_saved_pruned_linear_is_24(workflow_dir):
    for method in METHODS[1:]:
        b = 16 if method == "armor" else 0
        tensors, meta = load_tensors(workflow_dir / f"results/runs/tiny-llama/{method}/b{b}/pruned.safetensors")
        sparse = [v for k, v in tensors.items() if k.endswith(".core" if method == "armor" else ".weight")]
        assert len(sparse) == 3 * 7
        assert all(is_24(w) for w in sparse), method
        assert meta["method"] == method


def test_logs_and_benchmarks_are_written(workflow_dir):
    assert (workflow_dir / "results/logs/prune/tiny-llama/sparsegpt/b0.log").read_text().count("block 3/3") == 1
    assert (workflow_dir / "results/benchmarks/prune/tiny-llama/sparsegpt/b0.tsv").exists()


def test_killed_prune_job_resumes_on_rerun(workflow_dir, tmp_path):
    """Kill the prune job after one block; the next snakemake call finishes with identical weights."""
    run = workflow_dir / "results/runs/tiny-llama/sparsegpt/b0"
    reference, _ = load_tensors(run / "pruned.safetensors")
    shutil.copytree(workflow_dir / "results", tmp_path / "results")
    shutil.rmtree(tmp_path / "results/runs/tiny-llama/sparsegpt")
    target = "results/runs/tiny-llama/sparsegpt/b0/pruned.safetensors"

    killed = snakemake(tmp_path, target, env={FAULT_ENV: "1"})
    assert killed.returncode != 0
    assert (tmp_path / "results/checkpoints/tiny-llama/sparsegpt/b0/block_0000.safetensors").exists()
    assert not (tmp_path / target).exists()

    resumed = snakemake(tmp_path, target)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "block 1/3 resumed from checkpoint" in (tmp_path / "results/logs/prune/tiny-llama/sparsegpt/b0.log").read_text()
    weights, _ = load_tensors(tmp_path / target)
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_build_and_speed_tables(workflow_dir):
    result = snakemake(workflow_dir, "results/tables/speed.csv", "results/tables/layer_speed.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    speed = pd.read_csv(workflow_dir / "results/tables/speed.csv")
    assert len(speed) == len(METHODS) * 2  # batch sizes 1 and 2
    assert (speed[["prefill_tokens_per_s", "decode_tokens_per_s", "peak_memory_mb", "bytes_on_disk"]] > 0).all().all()
    assert {"device", "device_name", "torch", "transformers"} <= set(speed.columns)
    disk = speed.drop_duplicates("method").set_index("method")["bytes_on_disk"]
    assert disk["sparsegpt"] < disk["armor"] < disk["dense"]
    layers = pd.read_csv(workflow_dir / "results/tables/layer_speed.csv")
    assert set(layers["variant"]) == {"dense", "2:4", "armor_b64"}
    assert len(layers) == 3 * 3 and (layers["kernel"] == "dense").all()  # CPU: masked dense cores
