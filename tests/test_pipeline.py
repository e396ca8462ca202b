"""The block-by-block pipeline: exact block inputs for every architecture, the calibration pass, pruned parts that do
not depend on how blocks are grouped into jobs, the sequential chain, resuming, and model sources."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from armor.evaluation.perplexity import evaluate_run, evaluate_snapshots, perplexity, streamed_perplexity
from armor.pipeline.assemble import assemble
from armor.pipeline.blocks import BlockRunner, UnsupportedModelError, decoder_layers, layers_path
from armor.pipeline.calibration import calibrate, load_stats
from armor.pipeline.checkpoint import load_tensors
from armor.pipeline.data import calibration_windows, save_windows
from armor.pipeline.driver import prune_model
from armor.pipeline.models import (
    ModelFetchError,
    ModelPlacementError,
    apply_weights,
    check_placement,
    fetch_model,
    load_tokenizer,
    num_blocks,
)
from armor.pipeline.faults import FAULT_ENV
from armor.pipeline.prune import prune_chain, prune_part
from armor.pipeline.runs import block_tensors
from armor.sparsity import is_24

SMALL = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
ARCHITECTURES = {  # sliding windows of 8 tokens against calibration windows of 24
    "llama": {},
    "mistral": {"sliding_window": 8},
    "phi3": {"sliding_window": 8},
    "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2},
    "qwen3": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2, "head_dim": 8},
    "gemma2": {"sliding_window": 8, "head_dim": 8},
    "gemma3_text": {"sliding_window": 8, "head_dim": 8},  # 6 blocks: five sliding, then a global one
}


def _save_random(model_type: str, extra: dict, layers: int, folder: Path, seed: int = 0) -> PreTrainedModel:
    """A tiny random model of an architecture, saved to `folder` (config and weights; no tokenizer)."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, num_hidden_layers=layers, **(SMALL | extra))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_blocks_fed_one_at_a_time_reproduce_the_models_own_forward(model_type, tmp_path):
    model = _save_random(model_type, ARCHITECTURES[model_type], 6 if model_type == "gemma3_text" else 4, tmp_path)
    types = getattr(model.config, "layer_types", None)
    assert types is None or len(set(types)) == 2 or model_type in ("mistral", "phi3")  # both layer types present
    windows = torch.randint(0, 96, (3, 24), generator=torch.Generator().manual_seed(1))
    own: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, a, out: own.append(out)) for layer in decoder_layers(model)]
    with torch.no_grad():
        model(windows, use_cache=False)
    for hook in hooks:
        hook.remove()
    runner = BlockRunner(tmp_path, torch.float32, windows, torch.device("cpu"), batch_size=2)
    hidden = runner.hidden
    for index, expected in enumerate(own):
        block = runner.load(index)
        hidden = runner.run(index, block, hidden)
        runner.release(index)
        assert float((hidden - expected).norm() / expected.norm()) <= 1e-5, (model_type, index)
        assert all(p.is_meta for p in decoder_layers(runner.model)[index].parameters())  # released again
    again = runner.run(0, runner.load(0), runner.hidden)  # a released block loads again
    assert torch.allclose(again, own[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_perplexity_streamed_block_by_block_equals_the_whole_models(model_type, tmp_path):
    model = _save_random(model_type, ARCHITECTURES[model_type], 6 if model_type == "gemma3_text" else 4, tmp_path)
    windows = torch.randint(0, 96, (5, 24), generator=torch.Generator().manual_seed(1))
    whole = perplexity(model, windows, batch_size=2)
    streamed = streamed_perplexity(tmp_path, torch.float32, windows, torch.device("cpu"), batch_size=2)
    assert abs(streamed - whole) <= 1e-5 * whole, (model_type, streamed, whole)


def test_a_model_without_decoder_blocks_is_named_in_the_error():
    config = AutoConfig.for_model("mamba", vocab_size=64, hidden_size=16, num_hidden_layers=2, state_size=4)
    with pytest.raises(UnsupportedModelError, match=r"model type 'mamba' \(MambaForCausalLM\) has no list of decoder blocks"):
        layers_path(AutoModelForCausalLM.from_config(config))


@pytest.fixture(scope="module")
def six_blocks(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, torch.Tensor]:
    """A random Llama with 6 blocks and the tiny model's tokenizer, with 8 calibration windows of 32 tokens."""
    folder = tmp_path_factory.mktemp("six")
    _save_random("llama", {"vocab_size": len(load_tokenizer(tiny_model_dir))} | {"tie_word_embeddings": True}, 6, folder)
    load_tokenizer(tiny_model_dir).save_pretrained(folder)
    return folder, calibration_windows(load_tokenizer(folder), "gensim_news", 8, 32, 0)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "nowag_p", "armor"])
def test_pruned_blocks_do_not_depend_on_how_blocks_are_split_into_jobs(six_blocks, tmp_path, method):
    folder, windows = six_blocks
    options = {"seed": 0} | ({"block_size": 8, "iterations": 6, "lr": 1e-3, "trace_every": 3} if method == "armor" else {})
    one = prune_model(folder, "float32", method, options, windows, tmp_path / "one", mode="independent", blocks_per_part=6)
    many = prune_model(folder, "float32", method, options, windows, tmp_path / "many", mode="independent", blocks_per_part=1)
    assert one == {**many, "prune_seconds": one["prune_seconds"], "prune_parts": one["prune_parts"]}
    parts = one["prune_parts"]
    assert set(parts) == ({"read", "method", "start", "solver", "refit"} if method == "armor" else {"read", "method"})
    assert parts["read"] + parts["method"] == pytest.approx(one["prune_seconds"])
    if method == "armor":  # the method's time is its start and its solver, and little else
        assert 0 < parts["start"] + parts["solver"] <= parts["method"]
    first, second = list(block_tensors(tmp_path / "one/pruned")), list(block_tensors(tmp_path / "many/pruned"))
    assert len(first) == len(second) == 6
    for a, b in zip(first, second):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    weights = [v for block in first for k, v in block.items() if k.endswith(".core" if method == "armor" else ".weight")]
    assert len(weights) == 6 * 7 and all(is_24(w) for w in weights)
    index = json.loads((tmp_path / "one/pruned/model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-{i:05d}-of-00006.safetensors" for i in range(1, 7)]
    assert index["metadata"]["method"] == method and index["metadata"]["calibration_mode"] == "independent"


def test_assembled_shards_follow_block_order_whatever_the_part_folders_are_called(six_blocks, tmp_path):
    folder, windows = six_blocks
    calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "work", torch.device("cpu"), 4, hessian=False)
    for part, blocks in (("9", [0, 1, 2]), ("10", [3, 4, 5])):  # "10" sorts before "9"
        prune_part(folder, "float32", "magnitude", {}, blocks, tmp_path / "calib", tmp_path / f"ckpt{part}", tmp_path / part, torch.device("cpu"))
    assemble(folder, torch.float32, "magnitude", {}, "independent", [tmp_path / "9", tmp_path / "10"], tmp_path / "run/pruned", tmp_path / "run")
    first = list(block_tensors(tmp_path / "run/pruned"))[0]
    assert all(k.startswith("model.layers.0.") for k in first)


def test_calibration_pass_records_h_and_resumes(six_blocks, tmp_path):
    folder, windows = six_blocks
    calibrate(folder, torch.float32, windows, tmp_path / "out", tmp_path / "work", torch.device("cpu"), 4, hessian=True)
    stats = load_stats(tmp_path / "out", 5, torch.device("cpu"))
    assert set(stats) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert stats["mlp.down_proj"].h.shape == (64,) and stats["mlp.down_proj"].hessian.shape == (64, 64)
    assert torch.allclose(stats["mlp.down_proj"].hessian.diagonal(), stats["mlp.down_proj"].h)
    assert stats["self_attn.q_proj"].n == 8 * 32 and not (tmp_path / "work").exists()


def test_sequential_mode_calibrates_on_pruned_outputs(six_blocks, tmp_path):
    folder, windows = six_blocks
    prune_model(folder, "float32", "wanda", {}, windows, tmp_path / "i", mode="independent")
    summary = prune_model(folder, "float32", "wanda", {}, windows, tmp_path / "s", mode="sequential")
    assert summary["calibration_mode"] == "sequential"
    assert set(summary["prune_parts"]) == {"read", "calibration", "method"}
    assert sum(summary["prune_parts"].values()) == pytest.approx(summary["prune_seconds"])
    independent, sequential = list(block_tensors(tmp_path / "i/pruned")), list(block_tensors(tmp_path / "s/pruned"))
    first, last = "model.layers.0.self_attn.q_proj.h", "model.layers.5.mlp.down_proj.h"
    assert torch.equal(independent[0][first], sequential[0][first])  # block 0 sees the embeddings either way
    assert not torch.allclose(independent[5][last], sequential[5][last])


def test_ours_on_the_whole_covariance_runs_sequentially_without_storing_it(six_blocks, tmp_path):
    folder, windows = six_blocks
    options = {"seed": 0, "solver": "gauss_newton", "proxy": "block_covariance", "refit_steps": 3, "block_size": 8, "iterations": 2, "trace_every": 1}
    prune_model(folder, "float32", "armor", options, windows, tmp_path / "i", mode="independent")
    summary = prune_model(folder, "float32", "armor", options, windows, tmp_path / "s", mode="sequential")
    assert set(summary["prune_parts"]) == {"read", "calibration", "method", "start", "solver", "refit"} and summary["prune_parts"]["refit"] > 0
    independent, sequential = list(block_tensors(tmp_path / "i/pruned")), list(block_tensors(tmp_path / "s/pruned"))
    core = "model.layers.{}.mlp.down_proj.core"
    assert torch.equal(independent[0][core.format(0)], sequential[0][core.format(0)])  # block 0 sees the embeddings either way
    assert not torch.equal(independent[5][core.format(5)], sequential[5][core.format(5)])
    assert not any(name.endswith("hessian") for block in sequential for name in block)  # XᵀX/n stays in the chain


@pytest.mark.parametrize("mode", [pytest.param("independent", marks=pytest.mark.slow), "sequential"])  # CI: independent through SLURM
def test_a_killed_prune_job_resumes_to_identical_weights(six_blocks, tmp_path, mode):
    folder, windows = six_blocks
    if mode == "independent":
        calibrate(folder, torch.float32, windows, tmp_path / "calib", tmp_path / "calibrating", torch.device("cpu"), 4, hessian=True)
        call = (f"prune_part(Path({str(folder)!r}), 'float32', 'sparsegpt', {{}}, [0, 1, 2, 3], Path({str(tmp_path / 'calib')!r}), "
                f"Path({str(tmp_path / 'ckpt')!r}), Path({str(tmp_path / 'out')!r}), torch.device('cpu'))")
    else:
        torch.save(windows, tmp_path / "windows.pt")
        call = (f"prune_chain(Path({str(folder)!r}), 'float32', 'sparsegpt', {{}}, torch.load({str(tmp_path / 'windows.pt')!r}), "
                f"Path({str(tmp_path / 'ckpt')!r}), Path({str(tmp_path / 'out')!r}), torch.device('cpu'), 4)")
    code = f"import torch; from pathlib import Path; from armor import logs; from armor.pipeline.prune import prune_chain, prune_part; logs.setup(); {call}"
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ, FAULT_ENV: "2"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors")) == ["block_0000.safetensors", "block_0001.safetensors"]
    assert not (tmp_path / "out").exists()
    resumed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("resumed from checkpoint") == 2 and not (tmp_path / "ckpt").exists()
    if mode == "independent":
        prune_part(folder, "float32", "sparsegpt", {}, [0, 1, 2, 3], tmp_path / "calib", tmp_path / "ckpt2", tmp_path / "fresh", torch.device("cpu"))
    else:
        prune_chain(folder, "float32", "sparsegpt", {}, windows, tmp_path / "ckpt2", tmp_path / "fresh", torch.device("cpu"), 4)
    for file in sorted((tmp_path / "fresh").glob("*.safetensors")):
        fresh, resumed_tensors = load_tensors(file)[0], load_tensors(tmp_path / "out" / file.name)[0]
        assert fresh.keys() == resumed_tensors.keys() and all(torch.equal(fresh[k], resumed_tensors[k]) for k in fresh)


def test_local_folder_and_gguf_path_sources(six_blocks, tmp_path):
    folder, _ = six_blocks
    fetch_model({"source": "local", "path": str(folder), "dtype": "float32", "num_layers": 6}, tmp_path / "local")
    assert (tmp_path / "local/model.safetensors").is_symlink() and num_blocks({"source": "local", "path": str(folder)}, tmp_path / "none") == 6
    with pytest.raises(ModelFetchError, match="models.wrong.num_layers is 5 but the fetched llama model has 6 decoder blocks"):
        fetch_model({"source": "local", "path": str(folder), "dtype": "float32", "num_layers": 5}, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(ModelFetchError, match="models.nothing.path: .* is not a Hugging Face model folder"):
        fetch_model({"source": "local", "path": str(tmp_path), "dtype": "float32"}, tmp_path / "nothing")
    with pytest.raises(ModelFetchError, match="models.nothing.path: .* is not a Hugging Face model folder"):
        num_blocks({"source": "local", "path": str(tmp_path), "dtype": "float32"}, tmp_path / "nothing")
    with pytest.raises(ModelFetchError, match="models.g.path: no GGUF file at"):
        fetch_model({"source": "gguf", "path": str(tmp_path / "missing.gguf"), "dtype": "float32"}, tmp_path / "g")
    with pytest.raises(ModelFetchError, match="models.g.path: no GGUF file at"):
        num_blocks({"source": "gguf", "path": str(tmp_path / "missing.gguf"), "dtype": "float32"}, tmp_path / "g")
    with pytest.raises(ModelFetchError, match="set models.none.num_layers"):
        num_blocks({"source": "hub", "id": "org/model"}, tmp_path / "none")


def test_a_model_that_does_not_fit_its_gpus_is_refused_not_evaluated_with_dense_weights(six_blocks, tmp_path):
    folder, _ = six_blocks
    offloaded = AutoModelForCausalLM.from_pretrained(folder, device_map="auto", max_memory={"cpu": 10_000}, offload_folder=tmp_path)
    with pytest.raises(ModelPlacementError, match="offloaded to the CPU or disk .*raise models.<name>.gpus"):
        check_placement(offloaded)
    name = "model.layers.0.mlp.down_proj.weight"
    with pytest.raises(ValueError, match=f"{name} is offloaded"):  # copying into a meta tensor would silently do nothing
        apply_weights(offloaded, {name: torch.zeros(offloaded.get_parameter(name).shape)})
    check_placement(AutoModelForCausalLM.from_pretrained(folder))


@pytest.mark.parametrize("method", ["dense", "armor"])
def test_streamed_evaluation_of_a_run_and_its_snapshots_matches_the_loaded_model(six_blocks, tmp_path, method):
    folder, windows = six_blocks
    options = {"block_size": 8, "iterations": 6, "lr": 1e-2, "snapshots": [3]} if method == "armor" else {}
    prune_model(folder, "float32", method, options, windows, tmp_path, batch_size=4)
    save_windows(tmp_path / "eval.safetensors", windows[:5])
    results = {}
    for stream in (False, True):
        sets = {"a": tmp_path / "eval.safetensors", "b": tmp_path / "eval.safetensors"}
        results[stream] = [evaluate_run(folder, "float32", tmp_path / "pruned", sets, tmp_path / f"ppl{stream}.json", "cpu", 2, stream)]
        if method == "armor":
            results[stream].append(evaluate_snapshots(folder, "float32", tmp_path / "pruned", sets["a"], [3], tmp_path / f"s{stream}.json", "cpu", 2, stream))
    assert results[True][0].keys() == {"a", "b"}
    for whole, streamed in zip(results[False], results[True], strict=True):
        assert all(abs(streamed[k] - whole[k]) <= 1e-5 * whole[k] for k in whole), (whole, streamed)
    if method == "armor":
        assert abs(results[True][1][3] - results[True][0]["a"]) > 1e-3  # the snapshot is not the final weights


def test_snapshots_of_a_half_precision_run_are_saved_and_scored_in_its_dtype(six_blocks, tmp_path):
    folder, windows = six_blocks
    options = {"block_size": 8, "iterations": 6, "lr": 1e-2, "snapshots": [3]}
    prune_model(folder, "bfloat16", "armor", options, windows, tmp_path, batch_size=4)
    first = next(block_tensors(tmp_path / "pruned"))
    assert first["model.layers.0.mlp.down_proj.snapshot_3"].dtype == first["model.layers.0.mlp.down_proj.weight"].dtype == torch.bfloat16
    save_windows(tmp_path / "eval.safetensors", windows[:4])
    scores = [evaluate_snapshots(folder, "bfloat16", tmp_path / "pruned", tmp_path / "eval.safetensors", [3], tmp_path / f"s{stream}.json", "cpu", 2, stream)[3]
              for stream in (False, True)]
    assert abs(scores[1] - scores[0]) <= 1e-2 * scores[0], scores
