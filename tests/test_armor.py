"""ARMOR's optimiser: the batched solvers against the plain reference over many iterations, the compiled CPU row
and group sweeps against the batched ones, the exact sparse step against brute force, monotonicity, the guard, ragged blocks and
the layer-wise Adam against torch.optim.Adam."""

import dataclasses
import itertools
from collections.abc import Callable

import pytest
import reference_armor
import torch
from reference_armor import ReferenceLayer

from armor.methods.base import LayerStats
from armor.methods.nowag import prune as nowag_prune
from armor.optimizer import blockdiag as bd
from armor.optimizer import gauss_newton as gn
from armor.optimizer import normal_equations as ne
from armor.optimizer import row_sweep as rs
from armor.optimizer import sweep as sw
from armor.optimizer import sweeps_cpu
from armor.optimizer.adam import GuardCounts, LayerAdam, adam_step
from armor.optimizer.bcd import Options, SolverState, iterate, optimize, solver_state
from armor.optimizer.exact import exact_step
from armor.optimizer.pairs import Grid
from armor.optimizer.problem import Problem
from armor.optimizer.sweep import ROW_SWEEP_UNIT
from armor.proxy_loss import relative_loss
from armor.sparsity import is_24


def _layers(L: int, d_out: int, d_in: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random weights (L, d_out, d_in) and positive input scores h (L, d_in)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, d_out, d_in, generator=g, dtype=dtype), torch.rand(L, d_in, generator=g, dtype=dtype) * 2 + 0.1


def _real(lay: bd.Layout) -> torch.Tensor:
    """1 on the real indices of a layout's blocks, 0 on padding, (n_blocks, b)."""
    return bd.identity(lay, dtype=torch.float64).diagonal(dim1=-2, dim2=-1)[0]


def _perturb(prob: Problem, seed: int = 1, scale: float = 0.3) -> None:
    """Move A, B away from the identity and the core values away from NoWag-P's, keeping padding at zero."""
    g = torch.Generator().manual_seed(seed)
    dt = prob.a.dtype
    ra, rb = _real(prob.rows).to(dt), _real(prob.cols).to(dt)
    a = prob.a + scale * torch.randn(prob.a.shape, generator=g, dtype=dt) * ra[:, :, None] * ra[:, None, :]
    b = prob.b + scale * torch.randn(prob.b.shape, generator=g, dtype=dt) * rb[:, :, None] * rb[:, None, :]
    core = prob.core * (1 + 0.5 * torch.randn(prob.core.shape, generator=g, dtype=dt))
    prob.set_state(a, b, core, prob.mask)


def _reference(prob: Problem, i: int) -> ReferenceLayer:
    """Layer i of a problem as a plain reference layer (real blocks only, dense matrices)."""
    rows, cols = prob.rows, prob.cols

    def flat(x: torch.Tensor) -> torch.Tensor:
        """Layer i of a block grid as an unpadded matrix."""
        return bd.unpad(x.reshape(x.shape[0], rows.padded, cols.padded), rows, cols)[i]

    def blocks(x: torch.Tensor, lay: bd.Layout) -> list[torch.Tensor]:
        """Layer i's wrapper blocks without padding (the last one ragged)."""
        sizes = [min(lay.b, lay.d - k * lay.b) for k in range(lay.n_blocks)]
        return [x[i, k, :n, :n].clone() for k, n in enumerate(sizes) if n > 0]

    return ReferenceLayer(
        flat(prob.w_bar), prob.h[i, : cols.d].clone(), blocks(prob.a, rows), blocks(prob.b, cols), flat(prob.core),
        flat(prob.mask), rows.b,
    )


SHAPES = [(24, 40, 8), (20, 36, 8), (18, 36, 6)]  # whole blocks; ragged rows and columns; b not a multiple of 4
SLOW_SOLVERS = ("sweep", "gauss_newton")  # their plain reference re-solves every group by brute force: 1-4 minutes a shape
CI_STRIDED = {"adam": SHAPES[1], "exact": SHAPES[1], "sweep": SHAPES[2], "gauss_newton": SHAPES[2]}  # CI runs these
# pairs against the reference in test_non_contiguous_inputs_give_the_same_iterations, and the paper's Adam at SHAPES[2]
# here; the other pairs here are in the slow set


@pytest.mark.parametrize(("solver", "d_out", "d_in", "b"), [
    pytest.param(solver, *shape, marks=[] if solver == "adam" and shape == SHAPES[-1] else [pytest.mark.slow])
    for shape in SHAPES for solver in ("adam", "exact", *SLOW_SOLVERS)
])
def test_batched_solver_follows_the_plain_reference_for_60_iterations(solver, d_out, d_in, b):
    w, h = _layers(2, d_out, d_in)
    _follow_reference(Problem(w, h, b), solver, iterations=60)


@pytest.mark.slow
@pytest.mark.parametrize(("solver", "d_out", "d_in", "b"), [(s, *SHAPES[-1]) for s in SLOW_SOLVERS] + [("gauss_newton", 22, 44, 20)])
def test_batched_sweeps_follow_the_plain_reference_for_60_iterations(solver, d_out, d_in, b, monkeypatch):
    """The batched row and group sweeps (the GPU's path) on the CPU too; CI checks them against the compiled ones."""
    monkeypatch.setattr(rs, "FUSED_ON_CPU", False)
    monkeypatch.setattr(sw, "FUSED_ON_CPU", False)
    w, h = _layers(2, d_out, d_in)
    _follow_reference(Problem(w, h, b), solver, iterations=60)


SWEEPS = {"row": (rs, rs.row_sweep, "row_sweep_grid"), "group": (sw, sw.group_sweep, "group_sweep_grid")}  # module
# holding FUSED_ON_CPU, the sweep, and its compiled kernel's name in sweeps_cpu


def _sweeps_side_by_side(w: torch.Tensor, h: torch.Tensor, b: int, sweeps: int, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched and the compiled sweep of a kind from the same perturbed point, each round after the same random
    move of A and B: the same losses, and in float64 the same masks and values (float32: the compiled sweep works in
    float64)."""
    module, run_sweep, _ = SWEEPS[kind]
    prob, twin, dtype = Problem(w, h, b), Problem(w, h, b), w.dtype
    _perturb(prob)
    twin.set_state(prob.a.clone(), prob.b.clone(), prob.core.clone(), prob.mask.clone())
    g = torch.Generator().manual_seed(2)
    changed = 0
    for sweep in range(sweeps):
        for x in (prob, twin):
            monkeypatch.setattr(module, "FUSED_ON_CPU", x is twin)
            before = x.mask.clone()
            run_sweep(x)
        changed += int((twin.mask != before).any())
        assert (twin.loss <= prob.loss * (1 + 1e-3)).all() and torch.allclose(prob.loss, twin.loss, rtol=1e-5 if dtype == torch.float32 else 1e-10), sweep
        if dtype == torch.float64:
            assert torch.equal(prob.mask, twin.mask) and torch.allclose(prob.core, twin.core, rtol=1e-8, atol=1e-10), sweep
        a = prob.a * (1 + 0.05 * torch.randn(prob.a.shape, generator=g, dtype=dtype))
        b = prob.b * (1 + 0.05 * torch.randn(prob.b.shape, generator=g, dtype=dtype))
        for x in (prob, twin):
            x.set_state(a.clone(), b.clone(), x.core.clone(), x.mask.clone())
    assert changed >= sweeps // 2  # every round really moved patterns


@pytest.mark.parametrize(("d_out", "d_in", "b", "dtype"), [
    (18, 36, 6, torch.float64), (20, 44, 8, torch.float64), (33, 52, 16, torch.float64), (20, 44, 8, torch.float32),
])
def test_compiled_row_sweep_follows_the_batched_one_for_20_sweeps(d_out, d_in, b, dtype, monkeypatch):
    """Ragged blocks, units padded to a multiple of 4, a dead input column (h = 0), strided inputs, two layers."""
    w, h = _layers(2, d_out, d_in, dtype=dtype)
    h[0, 5] = 0
    w = w.transpose(1, 2).contiguous().transpose(1, 2)
    _sweeps_side_by_side(w, h, b, 20, "row", monkeypatch)


@pytest.mark.parametrize(("d_out", "d_in", "b", "dtype"), [
    (22, 44, 20, torch.float64), (18, 36, 6, torch.float64), (45, 72, 32, torch.float64), (22, 44, 20, torch.float32),
])
def test_compiled_group_sweep_follows_the_batched_one_for_20_sweeps(d_out, d_in, b, dtype, monkeypatch):
    """Units wider than the row sweep's (20, 32) and narrower (12), ragged blocks, padded units, a dead input column,
    strided inputs, two layers."""
    w, h = _layers(2, d_out, d_in, dtype=dtype)
    h[1, 7] = 0
    w = w.transpose(1, 2).contiguous().transpose(1, 2)
    _sweeps_side_by_side(w, h, b, 20, "group", monkeypatch)


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_a_layout_broken_compiled_sweep_fails_the_comparison(kind, monkeypatch):
    """The check catches a layout bug: Γ handed to the kernel with its column units in reverse order."""
    compiled = getattr(sweeps_cpu, SWEEPS[kind][2])

    def broken(grid: Grid, *rest: object) -> None:
        """The kernel with Γ's column units reversed, the core and mask still swept in place."""
        compiled(dataclasses.replace(grid, gamma=grid.gamma.flip(3)), *rest)

    monkeypatch.setattr(sweeps_cpu, SWEEPS[kind][2], broken)
    w, h = _layers(2, 20, 44)
    with pytest.raises(AssertionError):
        _sweeps_side_by_side(w, h, 8 if kind == "row" else 20, 20, kind, monkeypatch)


@pytest.mark.parametrize("solver", [pytest.param("sweep", marks=pytest.mark.slow), "gauss_newton"])
def test_wide_column_units_follow_the_plain_group_sweep_for_30_iterations(solver):
    """b = 20: the column unit is 20 wide, so each group is re-solved alone (the row sweep covers units up to 16)."""
    w, h = _layers(2, 22, 44)
    prob = Problem(w, h, 20)
    assert prob.unit > ROW_SWEEP_UNIT
    _follow_reference(prob, solver, iterations=30)


def _count_row_sweeps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Gauss–Newton's row sweeps from here on, one entry each."""
    swept, row_sweep = [], gn.row_sweep

    def counted(prob: Problem) -> None:
        """The row sweep, counted."""
        swept.append(1)
        row_sweep(prob)

    monkeypatch.setattr(gn, "row_sweep", counted)
    return swept


def _follow_two_layers_apart(broken: str | None, iterations: int) -> None:
    """Gauss–Newton at b = 20 on two strided layers, the second scaled by 0.3 so their sweeps and CG stall at
    different steps, against the reference; with a broken variant the comparison must fail."""
    w, h = _layers(2, 22, 44)
    w[1] *= 0.3
    prob = Problem(w.transpose(1, 2).contiguous().transpose(1, 2), h, 20)
    if broken:
        with pytest.raises(AssertionError):
            _follow_reference(prob, "gauss_newton", iterations)
        return
    _follow_reference(prob, "gauss_newton", iterations)


@pytest.mark.parametrize("broken", [None, "never", "whole problem"])
def test_stalled_group_sweeps_give_way_to_row_sweeps_as_in_the_plain_reference(broken, monkeypatch):
    """b = 20 (units past the row sweep's 16): each layer whose group sweep gained under STALL_GAIN takes a row sweep
    next, the other layer of the same problem the group sweep, over 45 iterations against the reference on strided
    inputs; a variant that never switches, or switches both layers when one stalls, fails the comparison."""
    gain = 0.05  # stalls within the test's 45 iterations (the solver's 1 % takes longer at the test's 2 CG steps)
    monkeypatch.setattr(reference_armor, "STALL_GAIN", gain)
    monkeypatch.setattr(gn, "STALL_GAIN", 0.0 if broken == "never" else gain)
    if broken == "whole problem":
        by_layer = gn.sweep_by_layer

        def whole(prob: Problem, active: torch.Tensor, state: gn.Damping) -> None:
            """The row sweep for every layer once any is due one."""
            state.stalled = state.stalled.any().expand_as(state.stalled).clone()
            by_layer(prob, active, state)

        monkeypatch.setattr(gn, "sweep_by_layer", whole)
    swept = _count_row_sweeps(monkeypatch)
    _follow_two_layers_apart(broken, 45)
    assert broken or len(swept) >= 3


@pytest.mark.parametrize("broken", [None, "never", "whole problem", "no damping floor"])
def test_a_layer_whose_cg_stalls_takes_the_row_exact_core_preconditioner_as_in_the_plain_reference(broken, monkeypatch):
    """`auto`: a layer whose CG ended with its preconditioned residual no smaller than it started takes the row-exact
    core preconditioner from then on, its damping raised to at least SWITCH_DAMPING, while the other layer of the
    same problem keeps the diagonal, over 30 iterations against the reference on strided inputs; a variant that never
    switches, switches both layers when one stalls, or leaves the damping where it was, fails the comparison."""
    real, row_flags = gn.levenberg_marquardt, []
    if broken == "no damping floor":
        monkeypatch.setattr(gn, "SWITCH_DAMPING", 0.0)

    def recorded(prob: Problem, cg_steps: int, damping: torch.Tensor, row_core: torch.Tensor) -> torch.Tensor:
        """The real step, its row-exact flags noted; for the broken variants a stall counted for no or every layer."""
        row_flags.append(row_core.clone())
        stalled = real(prob, cg_steps, damping, row_core)
        if broken == "never":
            return torch.zeros_like(stalled)
        return stalled.any().expand_as(stalled).clone() if broken == "whole problem" else stalled

    monkeypatch.setattr(gn, "levenberg_marquardt", recorded)
    _follow_two_layers_apart(broken, 30)
    if broken:
        return
    assert not row_flags[0].any() and row_flags[-1].all()
    assert any(flags.any() and not flags.all() for flags in row_flags)  # one layer row-exact, the other diagonal


@pytest.mark.parametrize(("d_out", "d_in", "b"), [SHAPES[2], (22, 44, 20)], ids=["b6-ragged", "b20-wide-units"])
def test_row_exact_core_preconditioner_follows_the_plain_reference_for_30_iterations(d_out, d_in, b):
    """Gauss–Newton with the core preconditioner exact on each row's kept values per column block, on strided inputs,
    against the reference's plain per-row blocks of the dense Gram matrix: b = 6 holds 2 to 4 kept values per row
    and block (groups straddle blocks, ragged edges), b = 20 takes the group sweep."""
    w, h = _layers(2, d_out, d_in)
    _follow_reference(Problem(w.transpose(1, 2).contiguous().transpose(1, 2), h, b), "gauss_newton", 30, core_preconditioner="row")


def test_row_exact_kept_blocks_match_a_plain_loop_and_fall_back_to_the_diagonal_where_cholesky_fails():
    """Each row's kept block of P_ii · Q_q (damped, ridged) inverted one at a time; a block made indefinite on purpose
    gets its damped diagonal's reciprocal."""
    g = torch.Generator().manual_seed(3)
    L, n_in, p_out, b = 2, 3, 5, 8
    x = torch.randn(L, n_in, b, b, generator=g, dtype=torch.float64)
    q = x @ x.transpose(-1, -2)
    q[1, 2, 0, 1] = q[1, 2, 1, 0] = 1e3  # layer 1, column block 2: indefinite where a row keeps columns 0 and 1
    p = torch.diag_embed(torch.rand(L, 1, p_out, generator=g, dtype=torch.float64) + 0.5)
    mask = torch.zeros(L, n_in, p_out, b, dtype=torch.float64)
    for idx in itertools.product(range(L), range(n_in), range(p_out)):
        for group in range(b // 4):
            mask[idx][4 * group + torch.randperm(4, generator=g)[:2]] = 1.0
    mask[1, 2, :, 0] = 1.0
    mask[1, 2, :, 1:4] = torch.tensor([1.0, 0.0, 0.0])
    damping = torch.tensor([1e-2, 1e-3], dtype=torch.float64)
    kept, inverse = ne._kept_inverse(q, p, mask, damping)
    fell_back = 0
    for l, c, i in itertools.product(range(L), range(n_in), range(p_out)):
        cols = kept[l, c, i]
        assert torch.equal(cols, mask[l, c, i].nonzero().flatten())
        block = p[l, 0, i, i] * q[l, c][cols][:, cols]
        diag = block.diagonal() * (1 + damping[l])
        damped = block + torch.diag(diag - block.diagonal() + ne.BLOCK_RIDGE * diag.max())
        if torch.linalg.eigvalsh(damped).min() > 0:
            expected = torch.linalg.inv(damped)
        else:
            expected, fell_back = torch.diag(1 / damped.diagonal()), fell_back + 1
        assert torch.allclose(inverse[l, c, i], expected, rtol=1e-8, atol=1e-12), (l, c, i)
    assert fell_back == p_out


@pytest.mark.parametrize("broken", ["no-row-scale", "no-damping"])
def test_a_broken_row_exact_core_preconditioner_fails_the_comparison(broken, monkeypatch):
    """The comparison above catches a kept block without its P_ii factor or without the damping."""
    real = ne._kept_inverse

    def kept_inverse(q: torch.Tensor, p: torch.Tensor, mask_col: torch.Tensor, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real kernel on a broken input."""
        if broken == "no-row-scale":
            return real(q, torch.eye(p.shape[-1], dtype=p.dtype).expand_as(p), mask_col, damping)
        return real(q, p, mask_col, torch.zeros_like(damping))

    monkeypatch.setattr(ne, "_kept_inverse", kept_inverse)
    w, h = _layers(2, *SHAPES[1][:2])
    with pytest.raises(AssertionError):
        _follow_reference(Problem(w, h, SHAPES[1][2]), "gauss_newton", 30, core_preconditioner="row")


def _solver_setup(prob: Problem, solver: str, core_preconditioner: str = "auto") -> tuple[Options, SolverState, GuardCounts, torch.Tensor]:
    """The options, solver state, guard counts and active flags the reference comparisons iterate with."""
    sparse_steps = 0 if solver in ("sweep", "gauss_newton") else 2  # a sweep visits every group itself
    opts = Options(block_size=prob.rows.b, solver=solver, lr=1e-2, cg_steps=2, sparse_steps=sparse_steps, selection="gradient_greedy",
                   sweep_every=3,  # steps without a sweep between sweeps, and a third of the reference's brute-force sweeps
                   core_preconditioner=core_preconditioner)
    counts = GuardCounts(torch.zeros(prob.layers, dtype=torch.long), torch.zeros(prob.layers, dtype=torch.long))
    return opts, solver_state(prob, opts), counts, torch.ones(prob.layers, dtype=torch.bool)


def _batched_losses(prob: Problem, solver: str, iterations: int) -> list[torch.Tensor]:
    """The batched iteration alone from the same perturbed start as _follow_reference; its losses."""
    _perturb(prob)
    opts, state, counts, active = _solver_setup(prob, solver)
    losses = []
    for _ in range(iterations):
        iterate(prob, opts, active, state, counts)
        losses.append(prob.loss.clone())
    return losses


def _follow_reference(prob: Problem, solver: str, iterations: int, rtol: float = 1e-4, core_preconditioner: str = "auto") -> list[torch.Tensor]:
    """Run the batched iteration and the plain reference side by side from a perturbed start; return the losses."""
    _perturb(prob)
    layers = prob.layers
    refs = [_reference(prob, i) for i in range(layers)]
    opts, state, counts, active = _solver_setup(prob, solver, core_preconditioner)
    start = torch.tensor([r.loss() for r in refs], dtype=torch.float64)
    assert torch.allclose(prob.loss, start, rtol=1e-6)
    losses, changed = [], 0
    for step in range(iterations):
        before_mask = prob.mask.clone()
        iterate(prob, opts, active, state, counts)
        changed += int((prob.mask != before_mask).any())
        expected = torch.tensor([r.iterate(solver, opts.lr, opts.cg_steps, opts.sparse_steps, opts.sweep_every, opts.core_preconditioner)
                                 for r in refs], dtype=torch.float64)
        assert torch.allclose(prob.loss, expected, rtol=rtol, atol=0), (step, prob.loss, expected)
        losses.append(prob.loss.clone())
    assert changed >= 5  # the sparse step really changed patterns along the way
    assert (prob.loss < 0.9 * start).all()
    return losses


@pytest.mark.parametrize("solver", list(CI_STRIDED))
def test_non_contiguous_inputs_give_the_same_iterations(solver):
    """Strided inputs against the plain reference, and the same losses as contiguous ones."""
    d_out, d_in, b = CI_STRIDED[solver]
    w, h = _layers(2, d_out, d_in)
    w_strided = w.transpose(1, 2).contiguous().transpose(1, 2)  # same values, column-major storage
    h_strided = torch.stack([h, -h], -1)[..., 0]  # every other element of a wider buffer
    assert not w_strided.is_contiguous() and not h_strided.is_contiguous()
    iterations = 30 if solver in SLOW_SOLVERS else 50
    strided = _follow_reference(Problem(w_strided, h_strided, b), solver, iterations)
    assert all(torch.allclose(x, y, rtol=1e-9) for x, y in zip(_batched_losses(Problem(w, h, b), solver, iterations), strided))


@pytest.mark.parametrize("solver", ["adam", "exact"])
def test_float32_continuous_steps_follow_the_float32_reference(solver):
    """Float32 kernels over 50 continuous steps (greedy group choices flip on float32 near-ties, so no sparse step)."""
    w, h = _layers(2, 20, 36, dtype=torch.float32)
    prob = Problem(w.transpose(1, 2).contiguous().transpose(1, 2), h, 8)
    _perturb(prob)
    refs = [_reference(prob, i) for i in range(2)]
    adam = LayerAdam(prob.params(), 1e-3)
    counts = GuardCounts(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    active = torch.ones(2, dtype=torch.bool)
    for step in range(50):
        if solver == "adam":
            adam_step(prob, adam, active, False, 0, counts)
        else:
            exact_step(prob, 2, active)
        for ref in refs:
            ref.adam_step(1e-3) if solver == "adam" else ref.exact_step(2)
        expected = torch.tensor([r.loss() for r in refs], dtype=torch.float64)
        assert torch.allclose(prob.loss, expected, rtol=1e-4, atol=0), (step, prob.loss, expected)


def test_layer_adam_equals_torch_adam_over_100_steps_with_strided_gradients():
    g = torch.Generator().manual_seed(0)
    shape = (3, 5, 4, 6)
    mine = torch.randn(shape, generator=g, dtype=torch.float64)
    theirs = [mine[i].clone().requires_grad_() for i in range(3)]
    adam = LayerAdam({"p": mine}, lr=1e-2)
    reference = torch.optim.Adam(theirs, lr=1e-2, foreach=False, fused=False)
    for _ in range(100):
        grad = torch.randn(shape[::-1], generator=g, dtype=torch.float64).permute(3, 2, 1, 0)  # non-contiguous
        mine.sub_(adam.directions({"p": grad})["p"] * 1e-2)
        for i, p in enumerate(theirs):
            p.grad = grad[i]
        reference.step()
        assert torch.allclose(mine, torch.stack([p.detach() for p in theirs]), rtol=1e-12, atol=1e-14)


def _with_group(core: torch.Tensor, prob: Problem, row: int, col: int, keep: tuple[int, int], v: torch.Tensor) -> torch.Tensor:
    """A copy of the core (grid) with one group set to values v on the kept pair, zero elsewhere."""
    out = core.clone().reshape(prob.rows.padded, prob.cols.padded)
    out[row, col : col + 4] = 0
    out[row, col + keep[0]], out[row, col + keep[1]] = v[0], v[1]
    return out.reshape(core.shape)


def _full_loss(prob: Problem, core: torch.Tensor) -> float:
    """The proxy loss from dense matrices, independent of the optimiser's bookkeeping."""
    a, b = bd.dense(prob.a[0], prob.rows), bd.dense(prob.b[0], prob.cols)
    flat = lambda x: bd.unpad(x.reshape(prob.rows.padded, prob.cols.padded), prob.rows, prob.cols)  # noqa: E731
    return float(((a @ flat(core) @ b - flat(prob.w_bar)).square() * prob.h[0, : prob.cols.d]).sum() / prob.z[0])


def _least_squares(loss: Callable[[torch.Tensor], float]) -> torch.Tensor:
    """Minimise a quadratic of 2 variables exactly from 6 evaluations."""
    f0, f1, f2 = loss(torch.tensor([0.0, 0.0])), loss(torch.tensor([1.0, 0.0])), loss(torch.tensor([0.0, 1.0]))
    f11, f22, f12 = loss(torch.tensor([2.0, 0.0])), loss(torch.tensor([0.0, 2.0])), loss(torch.tensor([1.0, 1.0]))
    q11, q22, q12 = (f11 - 2 * f1 + f0) / 2, (f22 - 2 * f2 + f0) / 2, (f12 - f1 - f2 + f0) / 2
    hess = 2 * torch.tensor([[q11, q12], [q12, q22]], dtype=torch.float64)
    return torch.linalg.lstsq(hess, -torch.tensor([f1 - f0 - q11, f2 - f0 - q22], dtype=torch.float64)[:, None]).solution[:, 0]


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(8, 8, 4), (6, 16, 8), (5, 12, 2)])
def test_sparse_step_equals_brute_force_over_all_six_patterns(d_out, d_in, b):
    w, h = _layers(1, d_out, d_in)
    prob = Problem(w, h, b)
    _perturb(prob)
    start_core = prob.core.clone()
    per_unit = prob.unit // 4
    n_units = prob.cols.padded // prob.unit
    choice = torch.randint(0, prob.rows.b * per_unit, (1, prob.rows.n_blocks, n_units), generator=torch.Generator().manual_seed(2))
    real_rows = choice // per_unit + torch.arange(prob.rows.n_blocks)[:, None] * prob.rows.b < d_out
    choice = torch.where(real_rows, choice, 0)  # keep every selected row a real one
    prob.sparse_step(choice, torch.ones(1, dtype=torch.bool))
    flat = lambda c: bd.unpad(c.reshape(prob.rows.padded, prob.cols.padded), prob.rows, prob.cols)  # noqa: E731
    for p, u in itertools.product(range(prob.rows.n_blocks), range(n_units)):
        rho, gamma = divmod(int(choice[0, p, u]), per_unit)
        row, col = p * prob.rows.b + rho, u * prob.unit + gamma * 4
        best = (_full_loss(prob, start_core), flat(start_core)[row, col : col + 4])
        for keep in itertools.combinations(range(4), 2):
            loss_of = lambda v: _full_loss(prob, _with_group(start_core, prob, row, col, keep, v))  # noqa: E731
            v = _least_squares(loss_of)
            if loss_of(v) < best[0] - 1e-12:
                best = (loss_of(v), flat(_with_group(start_core, prob, row, col, keep, v))[row, col : col + 4])
        assert torch.allclose(flat(prob.core)[row, col : col + 4], best[1], atol=1e-8), (p, u)
    assert abs(_full_loss(prob, prob.core) - float(prob.loss[0])) < 1e-10  # the incremental residual is exact


@pytest.mark.parametrize("selection", ["gradient_random", *(pytest.param(s, marks=pytest.mark.slow) for s in ("gradient_greedy", "random"))])
def test_exact_solver_is_monotone_and_ends_far_below_nowag(selection):
    w, h = _layers(3, 32, 48, dtype=torch.float32)
    out = optimize(w, h, Options(block_size=8, iterations=100, solver="exact", selection=selection, trace_every=1))
    assert out.trace_at == list(range(101))
    assert (out.trace[1:] <= out.trace[:-1]).all()
    for i in range(3):
        start = relative_loss(w[i], nowag_prune(w[i], LayerStats(h[i], 1)), h[i])
        assert abs(float(out.trace[0, i]) - start) < 1e-5  # ARMOR starts exactly at NoWag-P
        assert relative_loss(w[i], out.weights[i], h[i]) < 0.7 * start
        assert is_24(out.factors[i]["core"])


@pytest.mark.parametrize("solver", ["sweep", "gauss_newton"])
def test_sweep_solvers_are_monotone_and_end_far_below_nowag(solver):
    w, h = _layers(2, 20, 36, dtype=torch.float32)
    out = optimize(w, h, Options(block_size=6, iterations=50, solver=solver, trace_every=1))
    assert (out.trace[1:] <= out.trace[:-1]).all()
    assert (out.trace[-1] < 0.6 * out.trace[0]).all()
    assert all(is_24(layer["core"]) for layer in out.factors)


def test_exact_solver_beats_adam_in_the_same_iterations():
    w, h = _layers(2, 32, 64, dtype=torch.float32)
    adam = optimize(w, h, Options(block_size=16, iterations=60, lr=1e-3))
    exact = optimize(w, h, Options(block_size=16, iterations=60, solver="exact"))
    assert (exact.trace[-1] < adam.trace[-1]).all()


def test_guard_is_off_by_default_and_when_on_backtracks_without_stalling():
    w, h = _layers(2, 16, 32, dtype=torch.float32)
    assert Options().guard is False
    unguarded = optimize(w, h, Options(block_size=8, iterations=40, lr=0.3, trace_every=1))
    guarded = optimize(w, h, Options(block_size=8, iterations=40, lr=0.3, guard=True, trace_every=1))
    assert (unguarded.trace[1:] > unguarded.trace[:-1]).any()  # a huge lr overshoots without the guard
    assert (guarded.trace[1:] <= guarded.trace[:-1]).all()
    assert (guarded.guard.rejected > 0).all()  # it did reject steps ...
    assert (guarded.guard.skipped < guarded.guard.rejected).all()  # ... and retried many at a smaller rate
    assert (guarded.trace[-1] < 0.8 * guarded.trace[0]).all()  # ... so the loss kept falling
    assert (unguarded.guard.rejected == 0).all()


@pytest.mark.parametrize(("d_out", "d_in"), [(576, 576), (192, 576), (576, 192)])
def test_ragged_blocks_of_smollm2_shapes_rebuild_the_weight(d_out, d_in):
    w, h = _layers(1, d_out, d_in, dtype=torch.float32)
    out = optimize(w, h, Options(block_size=128, iterations=3, solver="exact"))
    layer = out.factors[0]
    assert out.weights[0].shape == (d_out, d_in) and layer["core"].shape == (d_out, d_in) and is_24(layer["core"])
    a, b = bd.dense(layer["A"], bd.layout(d_out, 128)), bd.dense(layer["B"], bd.layout(d_in, 128, 4))
    rebuilt = layer["r_out"][:, None] * (a @ layer["core"] @ b) * layer["r_in"]
    assert torch.allclose(rebuilt, out.weights[0], atol=1e-4)
    assert out.trace[-1, 0] < out.trace[0, 0]


def test_early_stopping_ends_a_converged_run():
    w, h = _layers(1, 16, 32, dtype=torch.float32)
    out = optimize(w, h, Options(block_size=1, iterations=1000, patience=5, trace_every=1))
    assert out.trace_at[-1] < 1000 and int(out.iterations[0]) == out.trace_at[-1]  # b = 1 cannot beat NoWag-P by much


def test_bad_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="option 'selection': 'best' is not allowed; allowed values: gradient_random"):
        Options.from_dict({"selection": "best"})
    with pytest.raises(ValueError, match="option 'solver': 'lbfgs' is not allowed; allowed values: adam, exact"):
        Options.from_dict({"solver": "lbfgs"})
    with pytest.raises(ValueError, match="option 'patience': 0 is less than the minimum of 1"):
        Options.from_dict({"patience": 0})
    with pytest.raises(ValueError, match="option 'block_size': 0 is less than the minimum of 1"):
        Options(block_size=0)
    with pytest.raises(ValueError, match="option 'snapshots': 5 is not of type 'array'"):
        Options.from_dict({"snapshots": 5})
    assert Options.from_dict({"snapshots": [20, 40]}).snapshots == (20, 40)
    with pytest.raises(ValueError, match=r"unknown armor option\(s\) \['learning_rate'\]"):
        Options.from_dict({"learning_rate": 1e-3})
