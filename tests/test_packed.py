"""The packed model: 2:4 compression, ArmorLinear against plain references, and prune → pack → load with plain
transformers (no armor-repro), the dense-equivalent export and the model card, on Llama, Qwen2 and Gemma3."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from armor.evaluation.perplexity import evaluate_run
from armor.inference.armor_linear import ArmorLinear, apply_blocks, compress_24, decompress_24
from armor.inference.model_card import model_card
from armor.inference.packed import export_dense, load_pruned, pack, packed_bytes
from armor.methods.variants import configured
from armor.optimizer import blockdiag as bd
from armor.pipeline.data import calibration_windows, evaluation_windows, save_windows
from armor.pipeline.driver import prune_model
from armor.pipeline.models import load_model, load_tokenizer
from armor.pipeline.runs import apply_run
from armor.sparsity import mask_24


def test_compression_round_trip_including_sparse_groups_and_odd_group_counts():
    w = torch.randn(6, 28) * mask_24(torch.randn(6, 28))  # 7 groups: the last byte holds one pattern
    w[0, :4] = torch.tensor([0.0, 0.0, 0.0, 1.5])  # fewer than 2 non-zeros
    w[1, 4:8] = 0
    values, patterns = compress_24(w)
    assert values.shape == (6, 14) and patterns.shape == (6, 4) and patterns.dtype == torch.uint8
    assert torch.equal(decompress_24(values, patterns, 28), w)
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(torch.ones(2, 8))


@pytest.mark.parametrize(("n", "b", "d"), [(3, 8, 20), (5, 128, 576), (1, 4, 4)])
def test_apply_blocks_equals_the_dense_block_diagonal_product_on_strided_inputs(n, b, d):
    g = torch.Generator().manual_seed(0)
    blocks = torch.randn(n, b, b, generator=g, dtype=torch.float64)
    x = torch.randn(d, 2, 7, generator=g, dtype=torch.float64).permute(2, 1, 0)  # (7, 2, d), non-contiguous
    reference = x @ torch.block_diag(*blocks)[:d, :d].T
    x = apply_blocks(x, blocks, d)
    assert torch.allclose(x, reference)
    for _ in range(20):  # repeated application keeps agreeing (a layout bug shows after the first step)
        x = apply_blocks(x, blocks, d) / b
        reference = reference @ torch.block_diag(*blocks)[:d, :d].T / b
    assert torch.allclose(x, reference)


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(576, 192, 128), (24, 36, 6)])
@pytest.mark.parametrize("fold", [True, False])
def test_armor_linear_matches_the_plain_product_with_bias(d_out, d_in, b, fold):
    """Folded (one A·core·B matmul) and unfolded (three products), on ragged blocks, b not a multiple of 4 and strided
    inputs, over many calls with the built matrix cached, and rebuilt after a dtype change."""
    g = torch.Generator().manual_seed(0)
    rows, cols = bd.layout(d_out, b), bd.layout(d_in, b, 4)
    real = [bd.identity(lay).diagonal(dim1=-2, dim2=-1)[0] for lay in (rows, cols)]
    a, bb = ((bd.identity(lay)[0] + torch.randn(lay.n_blocks, b, b, generator=g) / b) * r[:, :, None] * r[:, None, :] for lay, r in zip((rows, cols), real))
    core = torch.randn(d_out, d_in, generator=g) * mask_24(torch.randn(d_out, d_in, generator=g))
    bias = torch.randn(d_out, generator=g)
    layer = ArmorLinear.from_core(core, a, bb, bias, fold=fold)
    assert layer.kernel() == ("folded" if fold else "dense")  # no 2:4 kernels on the CPU
    for dtype, atol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        layer.to(dtype)
        reference = torch.block_diag(*a.to(dtype))[:d_out, :d_out] @ core.to(dtype) @ torch.block_diag(*bb.to(dtype))[:d_in, :d_in]
        assert torch.allclose(layer.dense_weight(), reference, atol=atol / 10)
        for _ in range(20):
            x = torch.randn(d_in, 3, 5, generator=g).to(dtype).permute(2, 1, 0)  # (5, 3, d_in), non-contiguous
            assert torch.allclose(layer(x), x @ reference.T + bias.to(dtype), atol=atol)
        assert layer.matrix().dtype == dtype


SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256}
ARCHITECTURES = {"llama": {"tie_word_embeddings": True}, "qwen2": {}, "gemma3_text": {"head_dim": 16, "sliding_window": 16}}  # qwen2: biases; gemma3 in the slow set


@pytest.fixture(scope="module", params=[arch if arch != "gemma3_text" else pytest.param(arch, marks=pytest.mark.slow) for arch in ARCHITECTURES])
def runs(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, torch.Tensor]:
    """A tiny random model of one architecture, its ARMOR and Wanda runs, their packed and dense-equivalent folders."""
    arch, root = request.param, tmp_path_factory.mktemp(request.param)
    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), **SMALL, **ARCHITECTURES[arch])
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    windows = evaluation_windows(tokenizer, "gensim_news", 48, max_windows=2)
    save_windows(root / "eval.safetensors", windows)
    calibration = calibration_windows(tokenizer, "gensim_news", 8, 48, 0)
    for method, options in {"armor": {"block_size": 16, "iterations": 10, "lr": 1e-3}, "wanda": {}, "dense": {}}.items():
        run = root / method
        summary = prune_model(root / "model", "float32", method, options, calibration, run, batch_size=4)
        assert summary["layers"] == 2 * 7
        evaluate_run(root / "model", "float32", run / "pruned", {"news": root / "eval.safetensors"}, run / "perplexity.json", device="cpu")
        card_options = options | ({"iterations": 10, "solver": "adam", "selection": "gradient_random"} if method == "armor" else {})
        variant = configured({"methods": [method], "armor": card_options})[method]
        cards = {packed: model_card("tiny", {"source": "random", "seqlen": 48}, variant, run / "summary.json", run / "perplexity.json",
                                    None, {"source": "gensim_news", "nsamples": 8, "seed": 0}, card_options, packed=packed)
                 for packed in (True, False)}
        pack(root / "model", "float32", run / "pruned", run / "packed", cards[True])
        export_dense(root / "model", "float32", run / "pruned", run / "dense_equivalent", cards[False])
    return arch, root, windows


def _reference_logits(root: Path, method: str, windows: torch.Tensor) -> torch.Tensor:
    """Logits of the base model with the run's pruned (reconstructed) weights applied."""
    model, _ = load_model(root / "model", "float32")
    apply_run(model, root / method / "pruned")
    with torch.no_grad():
        return model(windows).logits


PLAIN_LOAD = """
import sys, torch
sys.modules["armor"] = None  # this package is not importable here
from transformers import AutoModelForCausalLM
folder, windows, out, trust = sys.argv[1], torch.load(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust, dtype="auto").eval()
with torch.no_grad():
    logits = model(windows).logits
modules = sorted({type(m).__module__ + "." + type(m).__name__ for m in model.modules() if "Armor" in type(m).__name__})
model.save_pretrained(out)
torch.save({"logits": logits, "modules": modules}, out + "/result.pt")
"""


def _plain_load(folder: Path, windows: torch.Tensor, tmp: Path, trust: bool = True) -> subprocess.CompletedProcess:
    """Load a folder with plain transformers in a process where armor cannot be imported, and score windows."""
    torch.save(windows, tmp / "windows.pt")
    return subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(folder), str(tmp / "windows.pt"), str(tmp / "saved"), "1" if trust else "0"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("method", ["armor", "wanda"])
def test_packed_folder_loads_in_plain_transformers_with_its_own_code(runs, method, tmp_path):
    arch, root, windows = runs
    result = _plain_load(root / method / "packed", windows, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.load(tmp_path / "saved/result.pt")
    assert torch.allclose(loaded["logits"], _reference_logits(root, method, windows), atol=1e-4), arch
    assert loaded["modules"] and all(m.startswith("transformers_modules.") for m in loaded["modules"]), loaded["modules"]
    assert {"ArmorForCausalLM", "ArmorLinear"} <= {m.rsplit(".", 1)[1] for m in loaded["modules"]}
    again = _plain_load(tmp_path / "saved", windows, tmp_path / "saved")  # save_pretrained of the loaded model reloads
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.allclose(torch.load(tmp_path / "saved/saved/result.pt")["logits"], loaded["logits"], atol=1e-6)


def test_packed_folder_without_trust_remote_code_fails_clearly(runs, tmp_path):
    _, root, windows = runs
    result = _plain_load(root / "armor" / "packed", windows, tmp_path, trust=False)
    assert result.returncode != 0 and "trust_remote_code=True" in result.stderr


@pytest.mark.parametrize("method", ["armor", "wanda"])
def test_dense_equivalent_loads_without_custom_code_and_matches_the_packed_model(runs, method, tmp_path):
    arch, root, windows = runs
    result = _plain_load(root / method / "dense_equivalent", windows, tmp_path, trust=False)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.load(tmp_path / "saved/result.pt")
    assert loaded["modules"] == []
    packed = load_pruned(root / method / "packed")
    with torch.no_grad():
        assert torch.allclose(loaded["logits"], packed(windows).logits, atol=1e-4), arch


def test_packed_model_loads_in_another_dtype(runs):
    """The speed benchmark times float32 runs in half precision on a GPU (where the 2:4 kernels need it)."""
    _, root, windows = runs
    full, half = load_pruned(root / "armor" / "packed"), load_pruned(root / "armor" / "packed", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.get_buffer("model.layers.0.mlp.up_proj.patterns").dtype == torch.uint8
    with torch.no_grad():
        reference, logits = full(windows).logits, half(windows).logits.float()
    assert (logits - reference).norm() <= 2e-2 * reference.norm()


def test_biases_sizes_and_model_card(runs):
    arch, root, _ = runs
    config = json.loads((root / "armor/packed/config.json").read_text())
    assert config["model_type"] == "armor" and config["armor"]["base_model_type"] == arch
    layers = config["armor"]["layers"]
    assert len(layers) == 2 * 7 and {spec["block_size"] for spec in layers.values()} == {16}
    assert {name.rsplit(".", 1)[1] for name, spec in layers.items() if spec["bias"]} == ({"q_proj", "k_proj", "v_proj"} if arch == "qwen2" else set())
    sizes = {m: packed_bytes(root / m / "packed") for m in ("dense", "wanda", "armor")}
    assert sizes["wanda"] < sizes["armor"] < sizes["dense"]
    card = (root / "armor/packed/README.md").read_text()
    assert card.startswith("---\nbase_model:") and "custom_code" in card and "trust_remote_code=True" in card
    ppl = json.loads((root / "armor/perplexity.json").read_text())["news"]
    assert f"| perplexity, news | {ppl:.2f} |" in card and "block size 16" in card
    assert "custom_code" not in (root / "armor/dense_equivalent/README.md").read_text()
