"""The block-covariance proxy: its loss against a plain per-block sum on the weights the solvers produce over many
iterations, the solvers in its whitened coordinates against the plain reference, broken whitenings caught, and its
errors and labels."""

import pytest
import torch
from test_armor import SHAPES, _follow_reference, _layers

from armor.api import prune_layer
from armor.damping import DAMP
from armor.methods import get_method
from armor.methods.base import LayerStats
from armor.methods.nowag import prune as nowag_prune
from armor.methods.variants import configured
from armor.normalize import normalize
from armor.optimizer import blockdiag as bd
from armor.optimizer import covariance as cov
from armor.optimizer.adam import GuardCounts
from armor.optimizer.bcd import Options, iterate, optimize, solver_state
from armor.optimizer.problem import Problem
from armor.sparsity import is_24


def _covariances(L: int, d_in: int, seed: int = 2, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """XᵀX/n (L, d_in, d_in) of correlated inputs: random mixtures of a few shared factors plus noise, one dead input."""
    g = torch.Generator().manual_seed(seed)
    factors = torch.randn(L, 64, 3, generator=g, dtype=dtype)
    x = factors @ torch.randn(L, 3, d_in, generator=g, dtype=dtype) + 0.3 * torch.randn(L, 64, d_in, generator=g, dtype=dtype)
    x[:, :, 1] = 0  # an input no token uses
    return x.transpose(1, 2) @ x / 64


def plain_block_loss(weight: torch.Tensor, w_hat: torch.Tensor, covariance: torch.Tensor, b: int) -> float:
    """Σ_q tr(E_q H_q E_qᵀ) / Σ_q tr(W̄_q H_q W̄_qᵀ) in NoWag's normalised space, one block at a time: H_q the q-th b × b
    diagonal block of XᵀX/n plus 1 % of its mean diagonal on the diagonal, E = Ŵ/norms − W̄."""
    w_bar, r_in, r_out = normalize(weight)
    error = w_hat / r_out[:, None] / r_in - w_bar
    damp = DAMP * covariance.diagonal().mean()
    num = den = 0.0
    for start in range(0, weight.shape[1], b):
        cols = slice(start, min(start + b, weight.shape[1]))
        h_q = covariance[cols, cols] + damp * torch.eye(cols.stop - start, dtype=covariance.dtype)
        num += float(torch.trace(error[:, cols] @ h_q @ error[:, cols].T))
        den += float(torch.trace(w_bar[:, cols] @ h_q @ w_bar[:, cols].T))
    return num / den


@pytest.mark.parametrize(("d_in", "b"), [(36, 8), (36, 6), (40, 6), (16, 16), (8, 16), (576, 128)],
                         ids=["ragged", "b6", "padding-block", "one-block", "narrower-than-b", "smollm2-b128"])
def test_covariance_blocks_are_the_plain_diagonal_blocks_with_identity_on_padding(d_in, b):
    """The blocks cut from strided XᵀX/n equal a Python loop over the diagonal blocks of an identity-padded copy."""
    cols = bd.layout(d_in, b, 4)
    x = torch.randn(2, 3 * d_in, d_in, generator=torch.Generator().manual_seed(d_in + b), dtype=torch.float64)
    covariance = (x.transpose(1, 2) @ x).transpose(1, 2).contiguous().transpose(1, 2)
    padded = torch.eye(cols.padded, dtype=torch.float64).repeat(2, 1, 1)
    padded[:, :d_in, :d_in] = covariance
    plain = torch.stack([torch.stack([padded[i, q * b : (q + 1) * b, q * b : (q + 1) * b] for q in range(cols.n_blocks)])
                         for i in range(2)])
    assert torch.equal(cov.covariance_blocks(covariance, cols), plain)


def _iterate_and_check(prob: Problem, weights: torch.Tensor, covariance: torch.Tensor, solver: str, iterations: int) -> list[float]:
    """Run a solver on a block-covariance problem; at every iteration its loss must be the plain block loss of its
    weights; returns the losses."""
    opts = Options(block_size=prob.rows.b, solver=solver, lr=1e-2, cg_steps=3, sweep_every=2)
    state, active = solver_state(prob, opts), torch.ones(prob.layers, dtype=torch.bool)
    counts = GuardCounts(torch.zeros(prob.layers, dtype=torch.long), torch.zeros(prob.layers, dtype=torch.long))
    losses = []
    for step in range(iterations + 1):
        if step:
            iterate(prob, opts, active, state, counts)
        snapshot = prob.snapshot()
        for i in range(prob.layers):
            expected = plain_block_loss(weights[i], snapshot[i], covariance[i], prob.rows.b)
            assert float(prob.loss[i]) == pytest.approx(expected, rel=1e-7), (step, i)
        losses.append(float(prob.loss.max()))
    return losses


@pytest.mark.parametrize("solver", ["gauss_newton", "adam"])
@pytest.mark.parametrize(("d_out", "d_in", "b"), SHAPES[1:], ids=["ragged", "b6"])
def test_block_covariance_loss_is_the_plain_block_loss_of_the_weights_for_25_iterations(solver, d_out, d_in, b):
    """From NoWag-P's weights on, on ragged blocks and strided inputs, the solver's loss is the plain per-block sum of
    the weights it would hand back, and Gauss–Newton never rises above the start."""
    w, h = _layers(2, d_out, d_in)
    covariance = _covariances(2, d_in)
    strided = covariance.transpose(1, 2).contiguous().transpose(1, 2)  # symmetric, so the same values column-major
    assert not strided.is_contiguous()
    prob = Problem(w, h, b, covariance=strided)
    start = prob.snapshot()
    assert all(torch.allclose(start[i], nowag_prune(w[i], LayerStats(h=h[i], n=1)), atol=1e-12) for i in range(2))
    losses = _iterate_and_check(prob, w, covariance, solver, 25)
    if solver == "gauss_newton":
        assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(losses, losses[1:]))
        assert losses[-1] < 0.7 * losses[0]


def test_the_solvers_follow_the_plain_reference_in_whitened_coordinates_for_30_iterations():
    """The whitened problem (W̄ L, h = 1, B̃ = L) is an ordinary ARMOR problem: Gauss–Newton on it follows the plain
    reference."""
    d_out, d_in, b = SHAPES[2]
    w, h = _layers(2, d_out, d_in)
    _follow_reference(Problem(w, h, b, covariance=_covariances(2, d_in)), "gauss_newton", 30)


@pytest.mark.parametrize("broken", ["upper factor", "B not mapped back"])
def test_a_broken_whitening_fails_the_plain_loss(broken, monkeypatch):
    """Whitening with Lᵀ in place of L, or handing back B̃ without L⁻¹, breaks the loss check."""
    whitening = cov.whitening

    def wrong(covariance: torch.Tensor, cols) -> tuple[torch.Tensor, torch.Tensor]:
        """The factor transposed, or an identity in place of its inverse."""
        factor, inverse = whitening(covariance, cols)
        if broken == "upper factor":
            return factor.transpose(-1, -2).contiguous(), inverse.transpose(-1, -2).contiguous()
        return factor, torch.diag_embed(inverse.diagonal(dim1=-2, dim2=-1).ne(0).to(inverse.dtype))

    monkeypatch.setattr("armor.optimizer.problem.whitening", wrong)
    d_out, d_in, b = SHAPES[1]
    w, h = _layers(1, d_out, d_in)
    covariance = _covariances(1, d_in)
    with pytest.raises(AssertionError):
        _iterate_and_check(Problem(w, h, b, covariance=covariance), w, covariance, "gauss_newton", 5)


def test_whitening_retries_with_more_damping_and_names_what_failed(caplog):
    """A block that is not positive definite at 1 % damping is retried with more; one that never is raises."""
    b_layout = bd.layout(8, 4, 4)
    indefinite = torch.eye(8, dtype=torch.float64)
    indefinite[0, 1] = indefinite[1, 0] = 1.05  # eigenvalue -0.05: positive definite from 10 % damping on
    factor, inverse = cov.whitening(indefinite[None], b_layout)
    assert "Cholesky failed at damping 0.01" in caplog.text
    assert torch.allclose(factor[0] @ inverse[0], torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    with pytest.raises(ValueError, match="not positive definite"):
        cov.whitening(-torch.eye(8, dtype=torch.float64)[None], b_layout)


def test_the_proxy_and_the_covariance_go_together():
    """optimize, the method and the API name what is missing or extra."""
    w, h = _layers(1, 8, 16)
    covariance = _covariances(1, 16)
    with pytest.raises(ValueError, match="needs XᵀX/n"):
        optimize(w, h, Options(block_size=4, iterations=1, proxy="block_covariance"))
    with pytest.raises(ValueError, match="reads no covariance"):
        optimize(w, h, Options(block_size=4, iterations=1), covariance)
    with pytest.raises(ValueError, match="needs hessian"):
        prune_layer(w[0], h[0], "armor", block_size=4, iterations=1, proxy="block_covariance")
    with pytest.raises(ValueError, match="proxy"):
        Options(block_size=4, proxy="full")
    assert get_method("armor").needs_hessian({"proxy": "block_covariance"})
    assert not get_method("armor").needs_hessian({})
    assert get_method("sparsegpt").needs_hessian({})


def test_the_api_prunes_with_the_block_covariance_to_2_4_below_the_diagonal_proxys_block_loss():
    """prune_layer with the proxy: a 2:4 core, B handed back unwhitened, and a lower block loss than the diagonal
    proxy's result at the same settings."""
    w, h = _layers(1, 16, 32, seed=3)
    covariance = _covariances(1, 32)
    h = covariance[0].diagonal().clamp_min(1e-3)
    settings = {"block_size": 8, "iterations": 20, "solver": "gauss_newton"}
    block = prune_layer(w[0], h, "armor", hessian=covariance[0], proxy="block_covariance", **settings)
    diagonal = prune_layer(w[0], h, "armor", **settings)
    assert is_24(block.core)
    rebuilt = torch.block_diag(*block.A) @ block.core @ torch.block_diag(*block.B)
    assert torch.allclose(block.r_out[:, None] * rebuilt * block.r_in, block.weight, atol=1e-10)
    assert plain_block_loss(w[0], block.weight, covariance[0], 8) < plain_block_loss(w[0], diagonal.weight, covariance[0], 8)


def test_the_block_covariance_proxy_labels_a_run_as_ours():
    """ARMOR with the block-covariance proxy is ours, with Adam or any other solver."""
    config = {"methods": ["armor", "armor_cov", "armor_gn_cov"], "armor": {"solver": "adam"},
              "variants": {"armor_cov": {"method": "armor", "settings": {"proxy": "block_covariance"}},
                           "armor_gn_cov": {"method": "armor", "settings": {"solver": "gauss_newton", "proxy": "block_covariance"}}}}
    variants = configured(config)
    assert (variants["armor"].label, variants["armor"].origin) == ("ARMOR", "paper")
    assert (variants["armor_cov"].label, variants["armor_cov"].origin) == ("ARMOR, block covariance (ours)", "ours")
    assert variants["armor_gn_cov"].label == "ARMOR, Gauss–Newton, block covariance (ours)"
