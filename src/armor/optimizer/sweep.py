"""The sweep solver (ours, not the paper's): closed-form A and B, then an exact sweep over every group of the core.

The paper's sparse step re-solves one group of 4 per (row block of A, column unit) pair per iteration. A sweep
re-solves every group of every pair, in row-major order within a pair; the pairs are independent given A and B, so
they run as one batch (`pairs.py`). Where the column unit is at most 16 columns wide (b ≤ 16), it is the row sweep
(`row_sweep.py`): each group's pattern is chosen with the rest of its row re-solved. Wider units take the group sweep
here, each group against the others' latest values: with P = AᵀA and Q = B_u diag(h) B_uᵀ per pair, a group (row r,
columns S) has the quadratic f(v) = 2 vᵀ (Γ[r, S] − P_rr Q_SS c) + P_rr vᵀ Q_SS v for Γ = Aᵀ R diag(h) Bᵀ, and
changing its values by d moves Γ by P[:, r] (dᵀ Q[S, :]): O(b·U) per group, so a sweep costs about as much as one
product of the layer with B. Every part minimises the loss given the rest, so an iteration cannot raise it; a layer
whose loss still rose by rounding is restored.

After each iteration the solver tries an extrapolated point x + β (x − x_prev) along the last iteration's move
(the line-search acceleration used against swamps in alternating least squares) and keeps it only where the loss
falls; β grows after a success and shrinks after a failure.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from armor.optimizer.exact import update_a, update_b
from armor.optimizer.monotone import guarded, per_layer, where_layers
from armor.optimizer.pairs import Grid, Pairs, settle
from armor.optimizer.problem import Problem
from armor.optimizer.row_sweep import row_sweep
from armor.optimizer.sparse_core import best_patterns, pattern_systems
from armor.sparsity import GROUP

BETA_START, BETA_GROW, BETA_SHRINK, BETA_MIN, BETA_MAX = 1.0, 1.5, 0.5, 0.25, 8.0
ROW_SWEEP_UNIT = 16  # the widest column unit swept by rows: at b = 64 a row sweep cost 4x a group sweep for less
FUSED_ON_CPU = True  # the compiled per-pair group sweep on CPU tensors; off, the batched operations run there too


def group_sweep(prob: Problem) -> None:
    """Re-solve every group of the core once, exactly, each against the others' latest values, in Gauss–Seidel order
    (all layers); refreshes the problem. On the CPU the compiled kernel of `sweeps_cpu.py` runs it (unless
    FUSED_ON_CPU is off), elsewhere the batched operations below."""
    if FUSED_ON_CPU and prob.core.device.type == "cpu":
        from armor.optimizer.sweeps_cpu import group_sweep_grid  # numba, imported only where a CPU sweep runs

        grid = Grid.of(prob)
        group_sweep_grid(grid)
        settle(prob)
        return
    pairs = Pairs.of(prob)
    b, per_unit = pairs.core.shape[:2]
    q, p_diag = pairs.q, pairs.p_diag()
    q_diag = torch.stack([q[GROUP * g : GROUP * (g + 1), GROUP * g : GROUP * (g + 1)] for g in range(per_unit)])
    for r in range(b):
        quads = p_diag[r] * q_diag  # (G, 4, 4, N): P_rr Q_SS of row r's groups
        q2, inverse = (x.movedim(3, 0).contiguous() for x in pattern_systems(quads.movedim(0, 2)))  # (G, 6, 2, 2, N)
        row = pairs.gamma[r].clone()  # (U, N): Γ's row r as its groups change
        moved = torch.empty_like(row)
        for g in range(per_unit):
            cols = slice(GROUP * g, GROUP * (g + 1))
            current = pairs.core[r, g]
            quad_c = (quads[g] * current[None]).sum(1)  # (4, N)
            lin = row[cols] - quad_c
            f_current = (current * (lin + lin + quad_c)).sum(0)
            values, keep = best_patterns(lin, f_current, (q2[g], inverse[g]), current, pairs.mask[r, g])
            delta = values - current
            pairs.core[r, g], pairs.mask[r, g], moved[cols] = values, keep, delta
            row += p_diag[r] * (delta[:, None] * q[cols]).sum(0)
        pairs.pass_on(r, moved)
    pairs.write_back(prob)


def sweep(prob: Problem) -> None:
    """Re-solve every group's pattern and values once (all layers): the row sweep where the column unit is at most
    ROW_SWEEP_UNIT wide, the group sweep elsewhere; refreshes the problem."""
    (row_sweep if prob.unit <= ROW_SWEEP_UNIT else group_sweep)(prob)


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
