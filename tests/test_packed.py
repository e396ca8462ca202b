"""Packed 2:4 models: compression, the ArmorLinear module, and the prune → pack → load round trip."""

import pytest
import torch

from armor.evaluation.perplexity import perplexity
from armor.inference.armor_linear import ArmorLinear
from armor.inference.packed import compress_24, decompress_24, load_pruned, pack, packed_bytes
from armor.optimizer import blockdiag as bd
from armor.pipeline.data import calibration_windows, evaluation_windows
from armor.pipeline.driver import prune_model
from armor.pipeline.models import load_model, load_tokenizer
from armor.pipeline.runs import apply_run
from armor.sparsity import mask_24


def test_compression_round_trip_including_sparse_groups():
    w = torch.randn(6, 24) * mask_24(torch.randn(6, 24))
    w[0, :4] = torch.tensor([0.0, 0.0, 0.0, 1.5])  # fewer than 2 non-zeros
    w[1, 4:8] = 0
    values, patterns = compress_24(w)
    assert values.shape == (6, 12) and patterns.shape == (6, 3) and patterns.dtype == torch.uint8
    assert torch.equal(decompress_24(values, patterns, 24), w)


def test_compression_rejects_dense_groups():
    with pytest.raises(ValueError, match="not 2:4"):
        compress_24(torch.ones(2, 8))


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(576, 192, 128), (24, 32, 8)])
def test_armor_linear_matches_dense_product(d_out, d_in, b):
    g = torch.Generator().manual_seed(0)
    rows, cols = bd.layout(d_out, b), bd.layout(d_in, b, 4)
    real_rows = bd.identity(rows).diagonal(dim1=-2, dim2=-1)[0]
    real_cols = bd.identity(cols).diagonal(dim1=-2, dim2=-1)[0]
    # wrappers as ARMOR learns them: the identity plus a perturbation, zero on padded indices
    a = (bd.identity(rows)[0] + torch.randn(rows.n_blocks, b, b, generator=g) / b) * real_rows[:, :, None] * real_rows[:, None, :]
    bb = (bd.identity(cols)[0] + torch.randn(cols.n_blocks, b, b, generator=g) / b) * real_cols[:, :, None] * real_cols[:, None, :]
    core = torch.randn(d_out, d_in, generator=g) * mask_24(torch.randn(d_out, d_in, generator=g))
    x = torch.randn(3, 5, d_in, generator=g)
    expected = x @ (bd.dense(a, rows) @ core @ bd.dense(bb, cols)).T
    layer = ArmorLinear(core, a, bb)
    assert torch.allclose(layer(x), expected, atol=1e-3, rtol=1e-4)
    assert not layer.to_sparse()  # no 2:4 kernels on the CPU: the masked dense core stays


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """ARMOR, SparseGPT and dense runs of the tiny model, and evaluation windows."""
    root = tmp_path_factory.mktemp("runs")
    tok = load_tokenizer(tiny_model_dir)
    calibration = calibration_windows(tok, "gensim_news", 8, 32, 0)
    windows = evaluation_windows(tok, "gensim_news", 64, max_windows=4)
    options = {"armor": {"block_size": 16, "iterations": 10, "lr": 1e-3}, "sparsegpt": {}, "dense": {}}
    for method, opts in options.items():
        prune_model(tiny_model_dir, "float32", method, opts, calibration, root / method, batch_size=4)
        pack(tiny_model_dir, "float32", root / method / "pruned", root / method / "packed")
    return root, windows


@pytest.mark.parametrize("method", ["armor", "sparsegpt", "dense"])
def test_prune_pack_load_gives_the_same_perplexity(tiny_model_dir, runs, method):
    root, windows = runs
    reference, _ = load_model(tiny_model_dir, "float32")
    apply_run(reference, root / method / "pruned")
    packed = load_pruned(root / method / "packed")
    assert sum(isinstance(m, ArmorLinear) for m in packed.modules()) == 3 * 7
    with torch.no_grad():
        assert torch.allclose(packed(windows[:1]).logits, reference(windows[:1]).logits, atol=1e-4)
    assert perplexity(packed, windows) == pytest.approx(perplexity(reference, windows), rel=1e-5)


def test_packed_cores_are_24_and_smaller_on_disk(runs):
    root, _ = runs
    sizes = {m: packed_bytes(root / m / "packed") for m in ("dense", "sparsegpt", "armor")}
    assert sizes["sparsegpt"] < sizes["dense"]
    assert sizes["sparsegpt"] < sizes["armor"] < sizes["dense"]
    packed = load_pruned(root / "armor" / "packed")
    for module in packed.modules():
        if isinstance(module, ArmorLinear):
            assert module.a is not None and module.a.shape[-1] == 16
            groups = (module.weight != 0).reshape(module.out_features, -1, 4).sum(-1)
            assert (groups <= 2).all()
