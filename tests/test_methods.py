import pytest
import torch

import armor
from armor.damping import DAMP
from armor.methods import METHODS, get_method, magnitude, nowag, sparsegpt, wanda
from armor.methods.armor import prune_block
from armor.methods.base import LayerStats
from armor.normalize import normalize
from armor.sparsity import is_24


def _layer(d_out: int = 32, d_in: int = 64, tokens: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random weight and correlated inputs with uneven feature scales."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_out, d_in, generator=g)
    x = torch.randn(tokens, d_in, generator=g) @ torch.randn(d_in, d_in, generator=g) * torch.rand(d_in, generator=g) * 3
    stats = LayerStats(h=x.square().mean(0), n=tokens, hessian=x.T @ x / tokens)
    return w, x, stats


@pytest.mark.parametrize("prune", [magnitude.prune, wanda.prune, nowag.prune, sparsegpt.prune])
def test_every_method_gives_exact_24(prune):
    w, _, stats = _layer()
    out = prune(w, stats)
    assert out.shape == w.shape
    assert is_24(out)
    assert (out != 0).sum() == w.numel() // 2


def test_wanda_with_uniform_activations_is_magnitude():
    w, _, stats = _layer()
    uniform = LayerStats(h=torch.ones_like(stats.h), n=stats.n)
    assert torch.equal(wanda.prune(w, uniform), magnitude.prune(w, uniform))


def test_nowag_keeps_the_most_important_by_normalised_score():
    w, _, stats = _layer()
    w_bar = normalize(w).w_bar
    score = (w_bar.square() * stats.h).reshape(w.shape[0], -1, 4)
    kept = (nowag.prune(w, stats) != 0).reshape(w.shape[0], -1, 4)
    assert (score.masked_fill(~kept, float("inf")).amin(-1) >= score.masked_fill(kept, -1).amax(-1)).all()


def test_sparsegpt_update_beats_its_own_mask_without_update():
    w, x, stats = _layer()
    pruned = sparsegpt.prune(w, stats)
    err_updated = ((w - pruned) @ x.T).square().sum()
    err_masked = ((w - w * (pruned != 0)) @ x.T).square().sum()
    assert err_updated < 0.9 * err_masked


def test_sparsegpt_beats_wanda_on_output_error():
    w, x, stats = _layer()
    err = {name: ((w - m.prune(w, stats)) @ x.T).square().sum() for name, m in (("sparsegpt", sparsegpt), ("wanda", wanda))}
    assert err["sparsegpt"] < err["wanda"]


def test_sparsegpt_retries_with_more_damping_where_cholesky_fails(caplog):
    torch.manual_seed(0)
    x = torch.randn(64, 8) @ torch.randn(8, 32)  # rank 8: XᵀX is singular
    hessian = x.T @ x / 64
    null = torch.linalg.svd(x).Vh[-1]  # a unit vector with X v = 0
    hessian -= 0.05 * hessian.diagonal().mean() * torch.outer(null, null)  # an eigenvalue below -percdamp · mean diag, as rounding makes
    damped = hessian + DAMP * hessian.diagonal().mean() * torch.eye(32)
    assert torch.linalg.cholesky_ex(damped).info != 0
    w = torch.randn(16, 32)
    with caplog.at_level("WARNING"):
        pruned = sparsegpt.prune(w, LayerStats(h=hessian.diagonal(), n=64, hessian=hessian))
    assert is_24(pruned) and torch.isfinite(pruned).all()
    assert "Cholesky failed at percdamp 0.01; pruned with percdamp 0.1" in caplog.text


def test_dead_inputs_take_the_mean_h_for_nowag_and_armor(caplog):
    w, _, stats = _layer()
    h = stats.h.clone()
    h[:8] = 0  # inputs no calibration token used
    filled = torch.cat([h[8:].mean().expand(8), h[8:]])
    with caplog.at_level("INFO"):
        out = get_method("nowag_p").prune_block({"q": w}, {"q": LayerStats(h, 512)}, {})["q"]
    assert torch.equal(out.weight, nowag.prune(w, LayerStats(filled, 512)))
    assert "q: 8 of 64 inputs have h <= 0; set to the mean of the others" in caplog.text
    options = {"iterations": 3, "block_size": 16}
    with_zeros = get_method("armor").prune_block({"q": w}, {"q": LayerStats(h, 512)}, options)["q"]
    assert torch.equal(with_zeros.weight, prune_block({"q": w}, {"q": LayerStats(filled, 512)}, options)["q"].weight)
    with pytest.raises(ValueError, match="h of layer q has NaN or infinite entries"):
        get_method("armor").prune_block({"q": w}, {"q": LayerStats(torch.full_like(h, float("nan")), 512)}, options)


def test_unknown_method_lists_known_ones():
    with pytest.raises(KeyError, match="known: " + ", ".join(METHODS)):
        get_method("obc")


def test_armor_prunes_a_block_batched_by_shape_and_reproducibly():
    g = torch.Generator().manual_seed(0)
    weights = {"q": torch.randn(16, 32, generator=g), "k": torch.randn(8, 32, generator=g), "o": torch.randn(16, 32, generator=g)}
    stats = {n: LayerStats(h=torch.rand(32, generator=g), n=10) for n in weights}
    options = {"block_size": 8, "iterations": 20, "trace_every": 10, "seed": 3}
    out = prune_block(weights, stats, options)
    assert out.keys() == weights.keys()
    assert out["q"].trace_iterations.tolist() == [0, 10, 20] and out["q"].info["iterations"] == 20
    again = prune_block(weights, stats, options)
    assert all(torch.equal(out[n].weight, again[n].weight) for n in weights)  # seeded: reproducible


def test_prune_layer_api_for_armor_and_baselines():
    w, x, stats = _layer()
    result = armor.prune_layer(w, stats.h, "armor", block_size=16, iterations=30, lr=1e-3, solver="adam", seed=0)
    assert result.weight.shape == w.shape and is_24(result.core)
    assert result.A.shape == (2, 16, 16) and result.B.shape == (4, 16, 16) and result.trace[-1] < result.trace[0]
    assert torch.equal(armor.prune_layer(w, stats.h, "wanda").weight, wanda.prune(w, stats))
    assert torch.equal(armor.prune_layer(w, stats.h, "sparsegpt", hessian=stats.hessian).weight, sparsegpt.prune(w, stats))
    assert armor.prune_layer(w.half(), stats.h, "nowag_p").weight.dtype == torch.float16
    with pytest.raises(ValueError, match="needs hessian"):
        armor.prune_layer(w, stats.h, "sparsegpt")
    with pytest.raises(ValueError, match="takes no options"):
        armor.prune_layer(w, stats.h, "wanda", block_size=16)
    with pytest.raises(ValueError, match=r"expected weight \(d_out, d_in\) and h \(d_in,\)"):
        armor.prune_layer(w, stats.h[:-1], "wanda")
    with pytest.raises(ValueError, match="h must be finite and >= 0"):
        armor.prune_layer(w, -stats.h, "wanda")
    with pytest.raises(ValueError, match="weight has NaN"):
        armor.prune_layer(w * float("nan"), stats.h, "nowag_p")
    with pytest.raises(ValueError, match="option 'lr': -0.1 is less than or equal to the minimum of 0"):
        armor.prune_layer(w, stats.h, "armor", block_size=16, lr=-0.1)
    with pytest.raises(ValueError, match="option 'block_size': 0 is less than the minimum of 1"):
        armor.prune_layer(w, stats.h, "armor", block_size=0)


def test_a_methods_settings_reach_it_through_the_block_interface():
    w, _, stats = _layer()
    block = get_method("sparsegpt").prune_block
    default = block({"l": w}, {"l": stats}, {"seed": 0})["l"].weight
    assert torch.equal(default, sparsegpt.prune(w, stats))
    damped = block({"l": w}, {"l": stats}, {"seed": 0, "percdamp": 0.5, "blocksize": 16})["l"].weight
    assert torch.equal(damped, sparsegpt.prune(w, stats, percdamp=0.5, blocksize=16)) and not torch.equal(damped, default)
