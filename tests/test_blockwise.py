import os
import subprocess
import sys

import pytest
import torch

from armor.pipeline.blockwise import FAULT_ENV, prune_model
from armor.pipeline.checkpoint import load_tensors
from armor.pipeline.data import calibration_windows, load_windows, save_windows
from armor.methods import get_method
from armor.pipeline.models import load_model, load_tokenizer
from armor.pipeline.runs import prune_run
from armor.sparsity import is_24


@pytest.fixture(scope="module")
def calibration(tiny_model_dir, tmp_path_factory):
    """8 windows of 32 tokens, saved as the workflow saves them."""
    path = tmp_path_factory.mktemp("calib") / "calibration.safetensors"
    save_windows(path, calibration_windows(load_tokenizer(tiny_model_dir), "gensim_news", 8, 32, 0))
    return path


def _prune(tiny_model_dir, calibration, tmp_path, method, mode):
    model, _ = load_model(tiny_model_dir, "float32")
    return prune_model(model, load_windows(calibration), get_method(method), tmp_path / "ckpt", mode=mode, batch_size=4)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "nowag_p"])
def test_every_linear_is_24_and_h_is_saved(tiny_model_dir, calibration, tmp_path, method):
    tensors, report = _prune(tiny_model_dir, calibration, tmp_path, method, "independent")
    weights = {k: v for k, v in tensors.items() if k.endswith(".weight")}
    assert len(weights) == 3 * 7 == len(report.layers)
    assert all(is_24(w) for w in weights.values())
    assert all(tensors[k.removesuffix(".weight") + ".h"].shape == (w.shape[1],) for k, w in weights.items())
    assert all(0 < r.loss < 1 for r in report.layers)


def test_sequential_mode_sees_pruned_outputs(tiny_model_dir, calibration, tmp_path):
    independent, _ = _prune(tiny_model_dir, calibration, tmp_path / "i", "wanda", "independent")
    sequential, _ = _prune(tiny_model_dir, calibration, tmp_path / "s", "wanda", "sequential")
    first = "model.layers.0.self_attn.q_proj.h"
    last = "model.layers.2.mlp.down_proj.h"
    assert torch.equal(independent[first], sequential[first])  # block 0 sees the embeddings either way
    assert not torch.allclose(independent[last], sequential[last])


@pytest.mark.parametrize("mode", ["independent", "sequential"])
def test_killed_run_resumes_to_identical_weights(tiny_model_dir, calibration, tmp_path, mode):
    def run(out: str, env: dict | None = None) -> subprocess.CompletedProcess:
        code = (
            "import sys; from pathlib import Path; from armor.pipeline.runs import prune_run; "
            f"prune_run(Path({str(tiny_model_dir)!r}), 'float32', Path({str(calibration)!r}), 'sparsegpt', {{}}, "
            f"{mode!r}, Path({str(tmp_path / out / 'ckpt')!r}), Path({str(tmp_path / out)!r}), device='cpu', batch_size=4)"
        )
        return subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True)

    killed = run("resumed", {FAULT_ENV: "2"})
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (tmp_path / "resumed" / "ckpt").glob("*.safetensors")) == ["block_0000.safetensors", "block_0001.safetensors"]
    assert not (tmp_path / "resumed" / "pruned.safetensors").exists()

    summary = prune_run(tiny_model_dir, "float32", calibration, "sparsegpt", {}, mode, tmp_path / "resumed" / "ckpt", tmp_path / "resumed", device="cpu", batch_size=4)
    assert summary["resumed_blocks"] == 2
    assert run("fresh").returncode == 0
    resumed, _ = load_tensors(tmp_path / "resumed" / "pruned.safetensors")
    fresh, _ = load_tensors(tmp_path / "fresh" / "pruned.safetensors")
    assert resumed.keys() == fresh.keys()
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)
    assert not (tmp_path / "resumed" / "ckpt").exists()
