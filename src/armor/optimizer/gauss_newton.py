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


@dataclass
class Damping:
    """Per layer: the Levenberg–Marquardt damping λ and whether its last group sweep stalled; how many steps ran
    (for the sweep's schedule)."""

    lam: Tensor  # (L,) float64
    stalled: Tensor  # (L,) bool
    steps: int = 0

    @classmethod
    def start(cls, prob: Problem) -> "Damping":
        """λ at its starting value for every layer, none stalled."""
        dev = prob.a.device
        lam = torch.full((prob.layers,), DAMPING_START, dtype=torch.float64, device=dev)
        return cls(lam, torch.zeros(prob.layers, dtype=torch.bool, device=dev))


def levenberg_marquardt(prob: Problem, cg_steps: int, damping: Tensor, core_preconditioner: str = "diagonal") -> None:
    """Move A, B and the kept core values by `cg_steps` preconditioned CG steps on (JᵀJ + λ diag JᵀJ) δ = −Jᵀr."""
    tiny = torch.finfo(torch.float64).tiny
    system = NormalEquations(prob, damping, core_preconditioner)
    residual = system.rhs()
    step = [torch.zeros_like(r) for r in residual]
    direction = system.precondition(residual)
    rz = dot(residual, direction)
    for k in range(cg_steps):
        product = system.apply(direction)
        curvature = dot(direction, product)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0.0)
        for x, d in zip(step, direction):
            x.addcmul_(per_layer(alpha, x), d)
        if k == cg_steps - 1:
            break
        for r, p in zip(residual, product):
            r.addcmul_(per_layer(-alpha, r), p)
        z = system.precondition(residual)
        rz_next = dot(residual, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0.0)
        direction, rz = [x.addcmul_(per_layer(beta, x), d) for x, d in zip(z, direction)], rz_next
    system.move(step)


def gauss_newton_step(prob: Problem, active: Tensor, state: Damping, cg_steps: int, sweep_every: int,
                      core_preconditioner: str = "diagonal") -> None:
    """A guarded Levenberg–Marquardt step for the active layers, adapting λ per layer; a guarded sweep every
    `sweep_every` steps."""
    start = prob.loss
    guarded(prob, active, lambda p: levenberg_marquardt(p, cg_steps, state.lam, core_preconditioner))
    fell = active & (prob.loss < start)
    lam = torch.where(fell, state.lam / DAMPING_DOWN, (state.lam * DAMPING_UP).clamp(min=DAMPING_RETRY))
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
