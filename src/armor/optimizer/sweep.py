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
from armor.optimizer.problem import Problem
from armor.optimizer.sparse_core import best_patterns, pattern_systems
from armor.sparsity import GROUP

BETA_START, BETA_GROW, BETA_SHRINK, BETA_MIN, BETA_MAX = 1.0, 1.5, 0.5, 0.25, 8.0


def _by_group(prob: Problem, x: Tensor) -> Tensor:
    """A grid (L, n_out, b, n_in, b) as (b, G, L, n_out, n_units, 4), contiguous: row r's group g of every pair."""
    L, n_out, b = x.shape[:3]
    return x.reshape(L, n_out, b, -1, prob.unit // GROUP, GROUP).permute(2, 4, 0, 1, 3, 5).contiguous()


def _grid(prob: Problem, x: Tensor) -> Tensor:
    """The inverse of `_by_group`."""
    return x.permute(2, 3, 0, 4, 1, 5).reshape(prob.core.shape)


def sweep(prob: Problem) -> None:
    """Re-solve every group of the core once, exactly, in Gauss–Seidel order (all layers); refreshes the problem."""
    L, n_out, b = prob.core.shape[:3]
    unit, per_unit = prob.unit, prob.unit // GROUP
    n_units = prob.cols.padded // unit
    core, mask = _by_group(prob, prob.core), _by_group(prob, prob.mask)  # (b, G, L, n_out, n_units, 4)
    scale = (prob.z.to(prob.core.dtype) / 2).view(L, 1, 1, 1, 1)
    gamma = prob.core_gradient() * scale  # Γ = Aᵀ R diag(h) Bᵀ, grid
    gamma = gamma.reshape(L, n_out, b, n_units, unit).permute(2, 0, 1, 3, 4).contiguous()  # (b, L, n_out, n_units, U)
    p = prob.a.transpose(-1, -2) @ prob.a  # (L, n_out, b, b)
    p_cols = p.permute(3, 2, 0, 1)[..., None, None].contiguous()  # (b, b, L, n_out, 1, 1): [r] is P[:, r]
    b_unit = bd.merge(prob.b, unit)  # (L, n_units, U, U)
    q = ((b_unit * prob.h.view(L, n_units, 1, unit)) @ b_unit.transpose(-1, -2))[:, None]  # (L, 1, n_units, U, U)
    q_rows = q.view(L, 1, n_units, per_unit, GROUP, unit).permute(3, 0, 1, 2, 4, 5).contiguous()  # (G, L, 1, n_units, 4, U)
    q_diag = torch.stack([q_rows[g, ..., GROUP * g : GROUP * (g + 1)] for g in range(per_unit)])  # (G, L, 1, n_units, 4, 4)
    p_diag = p.diagonal(dim1=-2, dim2=-1).permute(2, 0, 1)[:, None, :, :, None, None, None]  # (b, 1, L, n_out, 1, 1, 1)
    quads = (p_diag * q_diag).contiguous()  # (b, G, L, n_out, n_units, 4, 4): P_rr Q_SS of every group
    systems = pattern_systems(quads)  # (b, G, L, n_out, n_units, 6, 2, 2) each
    for r in range(b):
        row = gamma[r].clone()  # (L, n_out, n_units, U): Γ's row r as its groups change
        moved = torch.empty_like(row)
        for g in range(per_unit):
            cols = slice(GROUP * g, GROUP * (g + 1))
            quad, current = quads[r, g], core[r, g]
            quad_c = (quad * current[..., None, :]).sum(-1)
            lin = row[..., cols] - quad_c
            f_current = (current * (lin + lin + quad_c)).sum(-1)
            values, keep = best_patterns(lin, f_current, (systems[0][r, g], systems[1][r, g]), current, mask[r, g])
            delta = values - current
            core[r, g], mask[r, g] = values, keep
            moved[..., cols] = delta
            row += p_cols[r, r] * (delta[..., :, None] * q_rows[g]).sum(-2)
        gamma += p_cols[r] * (moved[..., None, :] @ q)[..., 0, :]  # every row of Γ sees row r's changes
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


def _where_layers(select: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """x for the selected layers (bool (L,)), y elsewhere."""
    return torch.where(select.view(-1, *([1] * (x.dim() - 1))), x, y)


def _extrapolate(prob: Problem, state: Extrapolation, active: Tensor) -> None:
    """Try x + β (x − x_prev) on A, B and the kept core values; keep it where the loss falls, adapt β per layer."""
    reached = {k: v.clone() for k, v in prob.params().items()}
    if state.previous:
        start = prob.loss
        for name, value in prob.params().items():
            beta = state.beta.to(value.dtype).view(-1, *([1] * (value.dim() - 1)))
            value.add_(beta * (reached[name] - state.previous[name]))
        prob.core.mul_(prob.mask)
        prob.refresh()
        better = active & (prob.loss < start)
        for name, value in prob.params().items():
            value.copy_(_where_layers(better, value, reached[name]))
        prob.refresh()
        grown = (state.beta * BETA_GROW).clamp(max=BETA_MAX)
        state.beta = torch.where(better, grown, (state.beta * BETA_SHRINK).clamp(min=BETA_MIN))
        reached = {k: v.clone() for k, v in prob.params().items()}
    state.previous = reached


def sweep_step(prob: Problem, active: Tensor, state: Extrapolation) -> None:
    """Closed-form A, closed-form B, one sweep over every group and the guarded extrapolation, for the active layers.

    A layer that is inactive, or whose loss rose by rounding, is restored to where it was.
    """
    before = {k: v.clone() for k, v in prob.params().items()}
    before_mask, start = prob.mask.clone(), prob.loss
    update_a(prob)
    update_b(prob)
    sweep(prob)
    restore = ~active | (prob.loss > start)
    if restore.any():
        for name, value in prob.params().items():
            value.copy_(_where_layers(restore, before[name], value))
        prob.mask.copy_(_where_layers(restore, before_mask, prob.mask))
        prob.refresh()
    _extrapolate(prob, state, active)
