"""The Gauss–Newton solver (ours, not the paper's): Levenberg–Marquardt steps on A, B and the kept core values
together, and an exact sweep over every group every few steps.

Alternating closed-form A, B and core updates crawl along the valleys of the trilinear loss (the swamps of
alternating least squares), and Adam's first-order steps are slow too. A Gauss–Newton step moves all three at once:
with the weighted residual r = (A·C·B − W̄) ⊙ √h and its Jacobian J in (A's blocks, B's blocks, the kept core values),
it solves (JᵀJ + λ diag JᵀJ) δ = −Jᵀr by Jacobi-preconditioned conjugate gradient, each step costing a few
block-diagonal products, and keeps δ only where the loss falls (λ ÷ 3), else restores the layer (λ × 4, at least
1e-6). The step leaves the mask alone; after the first step and every `sweep_every` steps after it, the sweep
solver's Gauss–Seidel pass re-solves every group's pattern and values. Both parts are guarded, so the loss never
rises.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from armor.optimizer import blockdiag as bd
from armor.optimizer.monotone import guarded, per_layer
from armor.optimizer.problem import Problem
from armor.optimizer.sweep import sweep

DAMPING_START, DAMPING_DOWN, DAMPING_UP = 1e-2, 3.0, 4.0
DAMPING_RETRY = 1e-6  # λ after a rejected step is at least this, so λ that decayed to nothing grows back
PRECONDITIONER_FLOOR = 1e-30  # keeps a zero diagonal entry (padding, dead inputs) from dividing by zero


@dataclass
class Damping:
    """Per layer: the Levenberg–Marquardt damping λ; and how many steps ran (for the sweep's schedule)."""

    lam: Tensor  # (L,) float64
    steps: int = 0

    @classmethod
    def start(cls, prob: Problem) -> "Damping":
        """λ at its starting value for every layer."""
        return cls(torch.full((prob.layers,), DAMPING_START, dtype=torch.float64, device=prob.a.device))


Point = tuple[Tensor, Tensor, Tensor]  # A's blocks, B's blocks, the core (grid)


def _dot(xs: Point, ys: Point) -> Tensor:
    """Per-layer inner product (L,) of two points, summed in their dtype and returned in float64."""
    return sum(torch.linalg.vecdot(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)).double() for x, y in zip(xs, ys))


def _jacobian_product(prob: Problem, acc: Tensor, direction: Point) -> Tensor:
    """J δ before the √h weighting, as column blocks: dA·C·B + A·dC·B + A·C·dB for dC zero off the mask; acc = A·C
    as column blocks."""
    da, db, dc = direction
    moved = bd.right_columns(bd.columns(bd.left(prob.a, dc)), prob.b) + bd.right_columns(acc, db)
    return moved.add_(bd.columns(bd.left(da, prob.cb)))


def _transpose_product(prob: Problem, acc: Tensor, uc: Tensor) -> Point:
    """Jᵀ for column blocks uc = (Ŵ-space) ⊙ h: U (C·B)ᵀ on A's blocks, (A·C)ᵀ U on B's blocks, Aᵀ U Bᵀ ⊙ M on the
    core."""
    n_out = prob.a.shape[1]
    ubt = bd.from_columns(bd.right_columns(uc, prob.b.transpose(-1, -2)), n_out)
    return (
        bd.row_gram(bd.from_columns(uc, n_out), prob.cb),
        bd.column_gram(acc, uc),
        bd.left(prob.a.transpose(-1, -2), ubt).mul_(prob.mask),
    )


def _diagonal(prob: Problem, ac: Tensor) -> Point:
    """The diagonal of JᵀJ on A's blocks, B's blocks and the kept core values."""
    L = prob.layers
    h_blocks = prob.h.view(L, 1, prob.cols.n_blocks, prob.cols.b)  # h by column block, (L, 1, n_in, b)
    row_weight = (prob.cb.square() * prob.h_grid).sum((3, 4))  # Σ_k h_k (C·B)[m, k]², (L, n_out, b)
    col_weight = ac.square().sum((1, 2))  # Σ_i (A·C)[i, m]², (L, n_in, b)
    p_diag = prob.a.square().sum(-2)  # (AᵀA)_ii, (L, n_out, b)
    q_diag = (prob.b.square() * h_blocks[:, 0, :, None, :]).sum(-1)  # (B H Bᵀ)_jj, (L, n_in, b)
    return (
        row_weight[:, :, None, :].expand(prob.a.shape),
        col_weight[..., None] * h_blocks[:, 0, :, None, :],
        p_diag[:, :, :, None, None] * q_diag[:, None, None] * prob.mask,
    )


def levenberg_marquardt(prob: Problem, cg_steps: int, damping: Tensor) -> None:
    """Move A, B and the kept core values by `cg_steps` preconditioned CG steps on (JᵀJ + λ diag JᵀJ) δ = −Jᵀr."""
    tiny = torch.finfo(torch.float64).tiny
    ac = bd.left(prob.a, prob.core)
    acc, h_columns = bd.columns(ac), prob.h.view(prob.layers, -1, 1, prob.cols.b)  # A·C and h as column blocks
    diagonal = _diagonal(prob, ac)
    damped = tuple(per_layer(damping, d) * d for d in diagonal)  # λ diag JᵀJ
    precondition = tuple((d + s).add_(PRECONDITIONER_FLOOR) for d, s in zip(diagonal, damped))
    residual = tuple(-g for g in _transpose_product(prob, acc, bd.columns(prob.resid).mul_(h_columns)))
    step = tuple(torch.zeros_like(r) for r in residual)
    z = tuple(r / m for r, m in zip(residual, precondition))
    direction, rz = z, _dot(residual, z)
    for _ in range(cg_steps):
        product = _transpose_product(prob, acc, _jacobian_product(prob, acc, direction).mul_(h_columns))
        product = tuple(x.addcmul_(s, d) for x, s, d in zip(product, damped, direction))
        curvature = _dot(direction, product)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0.0)
        step = tuple(x.addcmul_(per_layer(alpha, x), d) for x, d in zip(step, direction))
        residual = tuple(r.addcmul_(per_layer(-alpha, r), p) for r, p in zip(residual, product))
        z = tuple(r / m for r, m in zip(residual, precondition))
        rz_next = _dot(residual, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0.0)
        direction, rz = tuple(x.addcmul_(per_layer(beta, x), d) for x, d in zip(z, direction)), rz_next
    for value, delta in zip(prob.params().values(), step):
        value.add_(delta)
    prob.core.mul_(prob.mask)
    prob.refresh()


def gauss_newton_step(prob: Problem, active: Tensor, state: Damping, cg_steps: int, sweep_every: int) -> None:
    """A guarded Levenberg–Marquardt step for the active layers, adapting λ per layer; a guarded sweep every
    `sweep_every` steps."""
    start = prob.loss
    guarded(prob, active, lambda p: levenberg_marquardt(p, cg_steps, state.lam))
    fell = active & (prob.loss < start)
    lam = torch.where(fell, state.lam / DAMPING_DOWN, (state.lam * DAMPING_UP).clamp(min=DAMPING_RETRY))
    state.lam = torch.where(active, lam, state.lam)
    state.steps += 1
    if (state.steps - 1) % sweep_every == 0:  # the first sweep right after the first step
        guarded(prob, active, sweep)
