import pytest
import torch

from armor import magnitude, nowag, sparsegpt, wanda
from armor.methods import METHODS, get_method
from armor.normalize import normalize
from armor.sparsity import is_24
from armor.stats import LayerStats


def _layer(d_out: int = 32, d_in: int = 64, tokens: int = 512, seed: int = 0):
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
    err = {m.__name__: ((w - m.prune(w, stats)) @ x.T).square().sum() for m in (sparsegpt, wanda)}
    assert err["armor.sparsegpt"] < err["armor.wanda"]


def test_unknown_method_lists_known_ones():
    with pytest.raises(KeyError, match="known: " + ", ".join(METHODS)):
        get_method("obc")
