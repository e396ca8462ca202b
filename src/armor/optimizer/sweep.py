"""The sweep solver (ours, not the paper's): closed-form A and B, then an exact Gauss–Seidel sweep over every group.

The paper's sparse step re-solves one group of 4 per (row block of A, column unit) pair per iteration. A sweep
re-solves every group of every pair, in row-major order within a pair, each against the others' latest values; the
pairs are independent given A and B, so they run as one batch. With P = AᵀA and Q = B_u diag(h) B_uᵀ per pair, a
group (row r, columns S) has the quadratic f(v) = 2 vᵀ (Γ[r, S] − P_rr Q_SS c) + P_rr vᵀ Q_SS v for
Γ = Aᵀ R diag(h) Bᵀ, and changing its values by d moves Γ by P[:, r] (dᵀ Q[S, :]): O(b·U) per group, so a sweep
costs about as much as one product of the layer with B. Every part minimises the loss given the rest, so an
iteration cannot raise it; a layer whose loss still rose by rounding is restored.

After each iteration the solver tries an extrapolated point x + β (x − x_prev) along the last iteration's move
(the line-search acceleration used against swamps in alternating least squares) and keeps it only where the loss
falls; β grows after a success and shrinks after a failure.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from armor.optimizer import blockdiag as bd
from armor.optimizer.exact import update_a, update_b
from armor.optimizer.monotone import guarded, per_layer, where_layers
from armor.optimizer.problem import Problem
from armor.optimizer.sparse_core import best_patterns, pattern_systems
from armor.sparsity import GROUP

BETA_START, BETA_GROW, BETA_SHRINK, BETA_MIN, BETA_MAX = 1.0, 1.5, 0.5, 0.25, 8.0


def _by_group(prob: Problem, x: Tensor) -> Tensor:
    """A grid (L, n_out, b, n_in, b) as (b, G, 4, N), contiguous: row r's group g of every pair, N pairs last."""
    L, n_out, b = x.shape[:3]
    n_units, per_unit = prob.cols.padded // prob.unit, prob.unit // GROUP
    return x.reshape(L, n_out, b, n_units, per_unit, GROUP).permute(2, 4, 5, 0, 1, 3).reshape(b, per_unit, GROUP, -1)


def _grid(prob: Problem, x: Tensor) -> Tensor:
    """The inverse of `_by_group`."""
    L, n_out, b = prob.core.shape[:3]
    return x.reshape(b, prob.unit // GROUP, GROUP, L, n_out, -1).permute(3, 4, 0, 5, 1, 2).reshape(prob.core.shape)


def sweep(prob: Problem) -> None:
    """Re-solve every group of the core once, exactly, in Gauss–Seidel order (all layers); refreshes the problem.

    Pairs (layer, row block, unit) form the last dimension N of every working tensor, so each operation runs over
    all pairs at once.
    """
    L, n_out, b = prob.core.shape[:3]
    unit, per_unit = prob.unit, prob.unit // GROUP
    n_units = prob.cols.padded // unit
    core, mask = _by_group(prob, prob.core), _by_group(prob, prob.mask)  # (b, G, 4, N)
    scale = (prob.z.to(prob.core.dtype) / 2).view(L, 1, 1, 1, 1)
    gamma = prob.core_gradient() * scale  # Γ = Aᵀ R diag(h) Bᵀ, grid
    gamma = gamma.reshape(L, n_out, b, n_units, unit).permute(2, 4, 0, 1, 3).reshape(b, unit, -1)  # (b, U, N)
    p = prob.a.transpose(-1, -2) @ prob.a  # (L, n_out, b, b)
    p = p.permute(3, 2, 0, 1)[..., None].expand(b, b, L, n_out, n_units).reshape(b, b, -1)  # (b, b, N): [r] is P[:, r]
    b_unit = bd.merge(prob.b, unit)  # (L, n_units, U, U)
    q = (b_unit * prob.h.view(L, n_units, 1, unit)) @ b_unit.transpose(-1, -2)  # B_u diag(h) B_uᵀ
    q = q.permute(2, 3, 0, 1)[:, :, :, None].expand(unit, unit, L, n_out, n_units).reshape(unit, unit, -1)  # (U, U, N)
    q_diag = torch.stack([q[GROUP * g : GROUP * (g + 1), GROUP * g : GROUP * (g + 1)] for g in range(per_unit)])
    p_diag = p.diagonal(dim1=0, dim2=1).T  # (b, N): P_rr
    for r in range(b):
        quads = p_diag[r] * q_diag  # (G, 4, 4, N): P_rr Q_SS of row r's groups
        q2, inverse = (x.movedim(3, 0).contiguous() for x in pattern_systems(quads.movedim(0, 2)))  # (G, 6, 2, 2, N)
        row = gamma[r].clone()  # (U, N): Γ's row r as its groups change
        moved = torch.empty_like(row)
        for g in range(per_unit):
            cols = slice(GROUP * g, GROUP * (g + 1))
            current = core[r, g]
            quad_c = (quads[g] * current[None]).sum(1)  # (4, N)
            lin = row[cols] - quad_c
            f_current = (current * (lin + lin + quad_c)).sum(0)
            values, keep = best_patterns(lin, f_current, (q2[g], inverse[g]), current, mask[r, g])
            delta = values - current
            core[r, g], mask[r, g], moved[cols] = values, keep, delta
            row += p_diag[r] * (delta[:, None] * q[cols]).sum(0)
        gamma[r + 1 :] += p[r][r + 1 :, None] * (moved[:, None] * q).sum(0)  # the rows still to come see row r's changes
    prob.core.copy_(_grid(prob, core))
    prob.mask.copy_(_grid(prob, mask))
    prob.refresh()


@dataclass
class Extrapolation:
    """Per layer: the point the last iteration ended at and the current extrapolation factor β."""

    previous: dict[str, Tensor]
    beta: Tensor  # (L,)

    @classmethod
    def start(cls, prob: Problem) -> "Extrapolation":
        """No previous point yet; β at its starting value."""
        return cls({}, torch.full((prob.layers,), BETA_START, dtype=torch.float64, device=prob.a.device))


def _extrapolate(prob: Problem, state: Extrapolation, active: Tensor) -> None:
    """Try x + β (x − x_prev) on A, B and the kept core values; keep it where the loss falls, adapt β per layer."""
    reached = {k: v.clone() for k, v in prob.params().items()}
    if state.previous:
        start = prob.loss
        for name, value in prob.params().items():
            value.add_(per_layer(state.beta, value) * (reached[name] - state.previous[name]))
        prob.core.mul_(prob.mask)
        prob.refresh()
        better = active & (prob.loss < start)
        for name, value in prob.params().items():
            value.copy_(where_layers(better, value, reached[name]))
        prob.refresh()
        grown = (state.beta * BETA_GROW).clamp(max=BETA_MAX)
        state.beta = torch.where(better, grown, (state.beta * BETA_SHRINK).clamp(min=BETA_MIN))
        reached = {k: v.clone() for k, v in prob.params().items()}
    state.previous = reached


def _closed_form_and_sweep(prob: Problem) -> None:
    """Closed-form A, closed-form B, then one sweep over every group."""
    update_a(prob)
    update_b(prob)
    sweep(prob)


def sweep_step(prob: Problem, active: Tensor, state: Extrapolation) -> None:
    """Closed-form A, closed-form B, one sweep over every group and the guarded extrapolation, for the active layers.

    A layer that is inactive, or whose loss rose by rounding, is restored to where it was.
    """
    guarded(prob, active, _closed_form_and_sweep)
    _extrapolate(prob, state, active)
