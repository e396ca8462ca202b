"""ARMOR's optimiser: exact sparse step, monotone loss, ragged blocks, selection rules."""

import itertools

import pytest
import torch

from armor import blockdiag as bd
from armor.bcd import Options, Problem, optimize, prune_block
from armor.nowag import prune as nowag_prune
from armor.proxy_loss import relative_loss
from armor.sparsity import is_24
from armor.stats import LayerStats


def _layers(L: int, d_out: int, d_in: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, d_out, d_in, generator=g, dtype=dtype), torch.rand(L, d_in, generator=g, dtype=dtype) * 2 + 0.1


def _perturbed_problem(d_out: int, d_in: int, b: int) -> Problem:
    """A float64 problem with non-identity A, B and non-NoWag core values."""
    w, h = _layers(1, d_out, d_in, dtype=torch.float64)
    prob = Problem(w, h, Options(block_size=b))
    g = torch.Generator().manual_seed(1)
    prob.a = prob.a + 0.3 * torch.randn(prob.a.shape, generator=g, dtype=torch.float64) * (prob.a.sum(-1, keepdim=True) != 0)
    prob.b = prob.b + 0.3 * torch.randn(prob.b.shape, generator=g, dtype=torch.float64) * (prob.b.sum(-1, keepdim=True) != 0)
    prob.core = prob.core * (1 + 0.5 * torch.randn(prob.core.shape, generator=g, dtype=torch.float64))
    prob._refresh()
    return prob


def _full_loss(prob: Problem, core: torch.Tensor) -> float:
    """The proxy loss from dense matrices, independent of the optimiser's bookkeeping."""
    a = bd.dense(prob.a[0], prob.rows)
    b = bd.dense(prob.b[0], prob.cols)
    c = bd.unpad(core.reshape(prob.rows.padded, prob.cols.padded), prob.rows, prob.cols)
    w_bar = bd.unpad(prob.w_bar.reshape(prob.rows.padded, prob.cols.padded), prob.rows, prob.cols)
    h = prob.h[0, : prob.cols.d]
    return float(((a @ c @ b - w_bar).square() * h).sum() / prob.z[0])


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(8, 8, 4), (6, 16, 8), (5, 12, 2)])
def test_sparse_step_equals_brute_force_over_all_six_patterns(d_out, d_in, b):
    prob = _perturbed_problem(d_out, d_in, b)
    start_core = prob.core.clone()
    g = torch.Generator().manual_seed(2)
    n_units = prob.cols.padded // prob.unit
    per_pair = prob.rows.b * prob.unit // 4
    choice = torch.randint(0, per_pair, (1, prob.rows.n_blocks, n_units), generator=g)
    real_rows = choice // (prob.unit // 4) + torch.arange(prob.rows.n_blocks)[:, None] * prob.rows.b < d_out
    choice = torch.where(real_rows, choice, 0)  # keep every selected row a real one
    prob.sparse_step(choice, torch.ones(1, dtype=torch.bool))

    flat_core = lambda c: bd.unpad(c.reshape(prob.rows.padded, prob.cols.padded), prob.rows, prob.cols)  # noqa: E731
    for p, u in itertools.product(range(prob.rows.n_blocks), range(n_units)):
        rho, gamma = divmod(int(choice[0, p, u]), prob.unit // 4)
        row, col = p * prob.rows.b + rho, u * prob.unit + gamma * 4
        best = (_full_loss(prob, start_core), flat_core(start_core)[row, col : col + 4])
        for keep in itertools.combinations(range(4), 2):
            losses_of = lambda v: _full_loss(prob, _with_group(start_core, prob, row, col, keep, v))  # noqa: E731
            v = _least_squares(losses_of)
            if losses_of(v) < best[0] - 1e-12:
                best = (losses_of(v), _with_group(start_core, prob, row, col, keep, v).reshape(prob.rows.padded, prob.cols.padded)[row, col : col + 4])
        got = flat_core(prob.core)[row, col : col + 4]
        assert torch.allclose(got, best[1], atol=1e-8), (p, u, got, best[1])


def _with_group(core: torch.Tensor, prob: Problem, row: int, col: int, keep: tuple[int, int], v: torch.Tensor) -> torch.Tensor:
    """A copy of the core with one group set to values v on the kept pair, zero elsewhere."""
    out = core.clone().reshape(prob.rows.padded, prob.cols.padded)
    out[row, col : col + 4] = 0
    out[row, col + keep[0]], out[row, col + keep[1]] = v[0], v[1]
    return out.reshape(core.shape)


def _least_squares(loss) -> torch.Tensor:
    """Minimise a quadratic of 2 variables exactly from 6 evaluations."""
    f0, f1, f2 = loss(torch.tensor([0.0, 0.0])), loss(torch.tensor([1.0, 0.0])), loss(torch.tensor([0.0, 1.0]))
    f11, f22, f12 = loss(torch.tensor([2.0, 0.0])), loss(torch.tensor([0.0, 2.0])), loss(torch.tensor([1.0, 1.0]))
    q11, q22 = (f11 - 2 * f1 + f0) / 2, (f22 - 2 * f2 + f0) / 2
    q12 = (f12 - f1 - f2 + f0) / 2
    g1, g2 = f1 - f0 - q11, f2 - f0 - q22
    hess = 2 * torch.tensor([[q11, q12], [q12, q22]], dtype=torch.float64)
    return torch.linalg.lstsq(hess, -torch.tensor([g1, g2], dtype=torch.float64)[:, None]).solution[:, 0]


@pytest.mark.parametrize("selection", ["gradient_random", "gradient_greedy", "random"])
def test_loss_never_rises_and_ends_below_nowag(selection):
    w, h = _layers(3, 32, 48)
    results, trace, at = optimize(w, h, Options(block_size=8, iterations=150, lr=1e-3, selection=selection, trace_every=1))
    assert at == list(range(151))
    assert (trace[1:] <= trace[:-1]).all()
    for i, res in enumerate(results):
        start = relative_loss(w[i], nowag_prune(w[i], LayerStats(h[i], 1)), h[i])
        assert abs(float(trace[0, i]) - start) < 1e-5  # ARMOR starts exactly at NoWag-P
        assert relative_loss(w[i], res.weight, h[i]) < 0.9 * start
        assert is_24(res.extras["core"])


@pytest.mark.parametrize(("d_out", "d_in"), [(576, 576), (192, 576), (576, 192)])
def test_ragged_blocks_of_smollm2_shapes(d_out, d_in):
    w, h = _layers(1, d_out, d_in)
    results, trace, _ = optimize(w, h, Options(block_size=128, iterations=5, lr=1e-3))
    res = results[0]
    assert res.weight.shape == (d_out, d_in)
    assert is_24(res.extras["core"]) and res.extras["core"].shape == (d_out, d_in)
    a = bd.dense(res.extras["A"], bd.layout(d_out, 128))
    b = bd.dense(res.extras["B"], bd.layout(d_in, 128, 4))
    rebuilt = res.extras["r_out"][:, None] * (a @ res.extras["core"] @ b) * res.extras["r_in"]
    assert torch.allclose(rebuilt, res.weight, atol=1e-4)
    assert trace[-1, 0] < trace[0, 0]


def test_guard_off_can_still_run_and_guard_on_rejects_bad_steps():
    w, h = _layers(1, 16, 32)
    _, trace_off, _ = optimize(w, h, Options(block_size=8, iterations=30, lr=0.5, guard=False, trace_every=1))
    _, trace_on, _ = optimize(w, h, Options(block_size=8, iterations=30, lr=0.5, guard=True, trace_every=1))
    assert (trace_off[1:] > trace_off[:-1]).any()  # a huge lr overshoots without the guard
    assert (trace_on[1:] <= trace_on[:-1]).all()


def test_early_stopping_ends_a_converged_run():
    w, h = _layers(1, 16, 32)
    _, _, at = optimize(w, h, Options(block_size=1, iterations=1000, patience=5, trace_every=1))
    assert at[-1] < 1000  # b = 1 cannot improve on NoWag-P, so it stalls and stops


def test_prune_block_batches_by_shape_and_keeps_trace():
    g = torch.Generator().manual_seed(0)
    weights = {"q": torch.randn(16, 32, generator=g), "k": torch.randn(8, 32, generator=g), "o": torch.randn(16, 32, generator=g)}
    stats = {n: LayerStats(h=torch.rand(32, generator=g), n=10) for n in weights}
    out = prune_block(weights, stats, {"block_size": 8, "iterations": 20, "trace_every": 10, "seed": 3})
    assert out.keys() == weights.keys()
    assert out["q"].extras["trace_iterations"].tolist() == [0, 10, 20]
    again = prune_block(weights, stats, {"block_size": 8, "iterations": 20, "trace_every": 10, "seed": 3})
    assert all(torch.equal(out[n].weight, again[n].weight) for n in weights)  # seeded: reproducible


def test_unknown_selection_is_rejected():
    with pytest.raises(ValueError, match="selection must be one of"):
        Options.from_dict({"selection": "best"})
