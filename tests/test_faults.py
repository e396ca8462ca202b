"""Faults and bad input: what the user sees for each (see README: Faults and bad input)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from armor.pipeline.calibration import calibrate
from armor.pipeline.data import calibration_windows
from armor.pipeline.models import ModelFetchError, fetch_model, load_model
from armor.pipeline.prune import DELAY_ENV
from armor.pipeline.runs import block_tensors
from armor.pipeline.stats import NonFiniteStatsError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_statistics_stop_the_pass_naming_the_layer(tiny_model_dir, tmp_path, bad):
    model, tokenizer = load_model(tiny_model_dir, "float32")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = bad  # down_proj of block 1 then sees non-finite inputs
    model.save_pretrained(tmp_path / "model")
    windows = calibration_windows(tokenizer, "gensim_news", 4, 32, 0)
    with pytest.raises(NonFiniteStatsError, match=r"layer model\.layers\.1\.mlp\.down_proj contain NaN or Inf"):
        calibrate(tmp_path / "model", torch.float32, windows, tmp_path / "out", tmp_path / "work", torch.device("cpu"), 4, hessian=False)
    assert (tmp_path / "work/block_0000.safetensors").exists()  # block 0 was fine and stays recorded
    assert not (tmp_path / "work/block_0001.safetensors").exists() and not (tmp_path / "out").exists()


def test_unknown_hub_model_without_network_fails_within_seconds(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ModelFetchError, match=r"(cannot reach the Hugging Face hub to fetch|no model) 'no-such-org/no-such-model'"):
        fetch_model({"source": "hub", "id": "no-such-org/no-such-model", "dtype": "float32", "num_layers": 2}, tmp_path / "model")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "model").exists()


def test_offline_hub_model_not_in_cache_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelFetchError, match=r"could not fetch 'meta-llama/Llama-2-7b-hf' from the Hugging Face hub"):
        fetch_model({"source": "hub", "id": "meta-llama/Llama-2-7b-hf", "dtype": "float16"}, tmp_path / "model")


def test_missing_model_package_says_how_to_install(tmp_path):
    with pytest.raises(ModelFetchError, match=r"package 'no_such_package' is not installed"):
        fetch_model({"source": "gguf", "package": "no_such_package", "file": "m.gguf", "dtype": "float32"}, tmp_path / "m")


def _snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The tiny workflow started in workdir with extra arguments and environment, output piped."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args, "--configfile", str(TINY)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def test_second_workflow_on_the_same_results_is_refused_by_the_lock(tmp_path):
    target = "results/runs/tiny-llama/wanda/b0/summary.json"
    first = _snakemake(tmp_path, target, env={DELAY_ENV: "4"})
    lock_dir = tmp_path / ".snakemake/locks"
    deadline = time.time() + 120
    while not (lock_dir.exists() and any(lock_dir.iterdir())) and time.time() < deadline:
        time.sleep(0.5)
    second = _snakemake(tmp_path, target)
    second_out, _ = second.communicate(timeout=300)
    first_out, _ = first.communicate(timeout=600)
    assert second.returncode != 0 and "Directory cannot be locked" in second_out
    assert first.returncode == 0, first_out[-4000:]
    weights = [k for block in block_tensors(tmp_path / "results/runs/tiny-llama/wanda/b0/pruned") for k in block if k.endswith(".weight")]
    assert len(weights) == 3 * 7
