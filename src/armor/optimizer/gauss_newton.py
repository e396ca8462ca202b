"""The Gauss–Newton solver (ours, not the paper's): Levenberg–Marquardt steps on A, B and the kept core values
together, and an exact sweep over every group every few steps.

Alternating closed-form A, B and core updates crawl along the valleys of the trilinear loss (the swamps of
alternating least squares), and Adam's first-order steps are slow too. A Gauss–Newton step moves all three at once:
with the weighted residual r = (A·C·B − W̄) ⊙ √h and its Jacobian J in (A's blocks, B's blocks, the kept core values),
it solves (JᵀJ + λ diag JᵀJ) δ = −Jᵀr by preconditioned conjugate gradient (`normal_equations.py`: Gram-form products,
the preconditioner exact on A's rows and B's columns, on the core diagonal or exact per row's kept values), and
keeps δ only where the loss falls (λ ÷ 3), else restores the layer (λ × 4, at least 1e-6). The step leaves the mask
alone; after the first step and every `sweep_every` steps after it, a sweep re-solves every group's pattern and
values: the row sweep where the column unit is at most 16 wide (`row_sweep.py`), elsewhere the group sweep
(`sweep.py`), except that up to 64 columns a layer whose group sweep lowered its loss by less than STALL_GAIN takes
the row sweep next. Early on the cheap group sweep moves thousands of patterns; once it stalls, the mask's tail needs
patterns chosen with the rest of their row. Both parts are guarded, so the loss never rises.

The core preconditioner (`core_preconditioner`): `diagonal`, `row` (exact per row's kept values in each column block,
b/4 times the core's memory), or `auto`, the default: the diagonal until a layer's CG ends with its preconditioned
residual no smaller than it started (CG_STALL), then, for column units up to ROW_CORE_UNIT wide, row from there on.
The diagonal is the cheaper where CG converges with it; where it does not (SmolLM2's narrow k_proj and v_proj at
b = 64), each step stops far from the Gauss–Newton point and the loss crawls. At the switch λ rises to at least
SWITCH_DAMPING: truncated CG kept the steps short while λ decayed (to 5e-7 on k_proj), and the better-solved step is
long, so without it the first four steps after the switch were rejected while λ climbed back.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from armor.optimizer.monotone import guarded, per_layer
from armor.optimizer.normal_equations import NormalEquations, dot
from armor.optimizer.problem import Problem
from armor.optimizer.row_sweep import row_sweep
from armor.optimizer.sweep import ROW_SWEEP_UNIT, group_sweep

DAMPING_START, DAMPING_DOWN, DAMPING_UP = 1e-2, 3.0, 4.0
DAMPING_RETRY = 1e-6  # λ after a rejected step is at least this, so λ that decayed to nothing grows back
STALL_GAIN = 0.01  # a group sweep lowering a layer's loss by less than this fraction makes its next sweep a row sweep
STALLED_ROW_SWEEP_UNIT = 64  # the widest column unit where a stalled group sweep gives way to the row sweep: at b = 128
# a row sweep costs about three Gauss–Newton iterations
CORE_PRECONDITIONERS = ("auto", "diagonal", "row")
CG_STALL = 1.0  # auto: a CG solve ending with its preconditioned residual norm at least this fraction of its start
SWITCH_DAMPING = 1e-4  # auto: λ is at least this when a layer takes the row-exact preconditioner
ROW_CORE_UNIT = 64  # auto: the widest column unit where a stalled CG switches the layer to the row-exact preconditioner


@dataclass
class Damping:
    """Per layer: the Levenberg–Marquardt damping λ, whether its last group sweep stalled and whether CG takes the
    row-exact core preconditioner; whether a stalled CG switches a layer to it (`auto`), and how many steps ran (for
    the sweep's schedule)."""

    lam: Tensor  # (L,) float64
    stalled: Tensor  # (L,) bool
    row_core: Tensor  # (L,) bool
    auto: bool = True
    steps: int = 0

    @classmethod
    def start(cls, prob: Problem, core_preconditioner: str = "auto") -> "Damping":
        """λ at its starting value for every layer, none stalled, the core preconditioner row-exact only for `row`."""
        if core_preconditioner not in CORE_PRECONDITIONERS:
            raise ValueError(f"core_preconditioner must be one of {CORE_PRECONDITIONERS}, got {core_preconditioner!r}")
        dev, L = prob.a.device, prob.layers
        lam = torch.full((L,), DAMPING_START, dtype=torch.float64, device=dev)
        row_core = torch.full((L,), core_preconditioner == "row", dtype=torch.bool, device=dev)
        return cls(lam, torch.zeros(L, dtype=torch.bool, device=dev), row_core, core_preconditioner == "auto")


def levenberg_marquardt(prob: Problem, cg_steps: int, damping: Tensor, row_core: Tensor) -> Tensor:
    """Move A, B and the kept core values by `cg_steps` preconditioned CG steps on (JᵀJ + λ diag JᵀJ) δ = −Jᵀr, the
    core preconditioner row-exact where `row_core` (L,); per layer, whether CG ended with its preconditioned residual
    norm at least CG_STALL times its start."""
    tiny = torch.finfo(torch.float64).tiny
    system = NormalEquations(prob, damping, row_core)
    residual = system.rhs()
    step = [torch.zeros_like(r) for r in residual]
    direction = system.precondition(residual)
    rz = rz_start = dot(residual, direction)
    for _ in range(cg_steps):
        product = system.apply(direction)
        curvature = dot(direction, product)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0.0)
        for x, d in zip(step, direction):
            x.addcmul_(per_layer(alpha, x), d)
        for r, p in zip(residual, product):
            r.addcmul_(per_layer(-alpha, r), p)
        z = system.precondition(residual)
        rz_next = dot(residual, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0.0)
        direction, rz = [x.addcmul_(per_layer(beta, x), d) for x, d in zip(z, direction)], rz_next
    system.move(step)
    return rz >= CG_STALL**2 * rz_start


def gauss_newton_step(prob: Problem, active: Tensor, state: Damping, cg_steps: int, sweep_every: int) -> None:
    """A guarded Levenberg–Marquardt step for the active layers, adapting λ and (`auto`) the core preconditioner per
    layer, λ at least SWITCH_DAMPING where a layer switched; a guarded sweep every `sweep_every` steps."""
    start, row_core = prob.loss, state.row_core

    def step(p: Problem) -> None:
        """The Levenberg–Marquardt step; under `auto`, a layer whose CG stalled takes the row-exact preconditioner."""
        cg_stalled = levenberg_marquardt(p, cg_steps, state.lam, state.row_core)
        if state.auto and p.unit <= ROW_CORE_UNIT:
            state.row_core = state.row_core | (active & cg_stalled)

    guarded(prob, active, step)
    fell = active & (prob.loss < start)
    lam = torch.where(fell, state.lam / DAMPING_DOWN, (state.lam * DAMPING_UP).clamp(min=DAMPING_RETRY))
    lam = torch.where(state.row_core & ~row_core, lam.clamp(min=SWITCH_DAMPING), lam)
    state.lam = torch.where(active, lam, state.lam)
    state.steps += 1
    if (state.steps - 1) % sweep_every == 0:  # the first sweep right after the first step
        sweep_by_layer(prob, active, state)


def sweep_by_layer(prob: Problem, active: Tensor, state: Damping) -> None:
    """A guarded sweep of the active layers: the row sweep where the unit is at most ROW_SWEEP_UNIT wide or the
    layer's last group sweep stalled, the group sweep elsewhere; a group sweep stalled where it lowered the layer's
    loss by less than STALL_GAIN (counted for units up to STALLED_ROW_SWEEP_UNIT wide)."""
    rows = active & (state.stalled | (prob.unit <= ROW_SWEEP_UNIT))
    if rows.any():
        guarded(prob, rows, row_sweep)
    groups = active & ~rows
    if groups.any():
        start = prob.loss
        guarded(prob, groups, group_sweep)
        gained_little = (prob.loss > (1 - STALL_GAIN) * start) & (prob.unit <= STALLED_ROW_SWEEP_UNIT)
        state.stalled = torch.where(groups, gained_little, state.stalled)
    state.stalled = state.stalled & ~rows
