"""The core's groups by (row block of A, column unit) pair, pairs last: the layout and quadratics both sweeps use.

Given A and B, the pairs are independent: changing row r of a pair's core block by d changes the loss (times z/2) by
2 dᵀ Γ_r + P_rr dᵀ Q d, with Γ = Aᵀ R diag(h) Bᵀ, P = AᵀA and Q = B_u diag(h) B_uᵀ, and moves Γ's other rows r' by
P_r'r Q d. In `Pairs` (the batched sweeps') every working tensor has the N = L · n_out · n_units pairs as its last
dimension, so each operation runs over all pairs at once; `Grid` holds the same quadratics once each, at the problem's
own layout, for the compiled CPU sweeps that visit one pair at a time.
"""

from dataclasses import dataclass

from torch import Tensor

from armor.optimizer import blockdiag as bd
from armor.optimizer.problem import Problem
from armor.sparsity import GROUP


def by_group(prob: Problem, x: Tensor) -> Tensor:
    """A grid (L, n_out, b, n_in, b) as (b, G, 4, N), contiguous: row r's group g of every pair, N pairs last."""
    L, n_out, b = x.shape[:3]
    n_units, per_unit = prob.cols.padded // prob.unit, prob.unit // GROUP
    return x.reshape(L, n_out, b, n_units, per_unit, GROUP).permute(2, 4, 5, 0, 1, 3).reshape(b, per_unit, GROUP, -1)


def from_groups(prob: Problem, x: Tensor) -> Tensor:
    """The inverse of `by_group`."""
    L, n_out, b = prob.core.shape[:3]
    return x.reshape(b, prob.unit // GROUP, GROUP, L, n_out, -1).permute(3, 4, 0, 5, 1, 2).reshape(prob.core.shape)


def settle(prob: Problem) -> None:
    """Zero the core off the mask after a sweep changed both, and refresh the problem."""
    prob.core.mul_(prob.mask)
    prob.refresh()


@dataclass
class Grid:
    """The same quadratics at the problem's own layout, each held once (what the CPU's compiled sweeps take): the
    core and mask as views (L, n_out, b, n_units, U), Γ alike, P = AᵀA (L, n_out, b, b), Q (L, n_units, U, U) and
    the groups' validity (n_out, n_units, b, G) as bool, the same for every layer."""

    core: Tensor
    mask: Tensor
    gamma: Tensor
    p: Tensor
    q: Tensor
    valid: Tensor

    @classmethod
    def of(cls, prob: Problem) -> "Grid":
        """The quadratics of a problem at its current point; core and mask share the problem's memory."""
        L, n_out, b = prob.core.shape[:3]
        unit = prob.unit
        n_units = prob.cols.padded // unit
        units = (L, n_out, b, n_units, unit)
        scale = (prob.z.to(prob.core.dtype) / 2).view(L, 1, 1, 1, 1)
        gamma = (prob.core_gradient() * scale).view(units)  # Γ
        b_unit = bd.merge(prob.b, unit)  # (L, n_units, U, U)
        q = (b_unit * prob.h.view(L, n_units, 1, unit)) @ b_unit.transpose(-1, -2)  # B_u diag(h) B_uᵀ
        valid = (prob.valid > 0).view(n_out, n_units, b, unit // GROUP)
        return cls(prob.core.view(units), prob.mask.view(units), gamma, prob.a.transpose(-1, -2) @ prob.a, q, valid)

@dataclass
class Pairs:
    """The core, mask and validity by group (b, G, 4, N) / (b, G, N), Γ's rows (b, U, N), P's columns (b, b, N), Q (U, U, N)."""

    core: Tensor
    mask: Tensor
    valid: Tensor
    gamma: Tensor
    p: Tensor  # [r] is P[:, r]
    q: Tensor

    @classmethod
    def of(cls, prob: Problem) -> "Pairs":
        """The pairs of a problem at its current point."""
        grid = Grid.of(prob)
        L, n_out, b, n_units, unit = grid.gamma.shape
        N = L * n_out * n_units
        valid = grid.valid.expand(L, -1, -1, -1, -1).permute(3, 4, 0, 1, 2).reshape(b, -1, N)
        gamma = grid.gamma.permute(2, 4, 0, 1, 3).reshape(b, unit, N)
        p = grid.p.permute(3, 2, 0, 1)[..., None].expand(b, b, L, n_out, n_units).reshape(b, b, N)
        q = grid.q.permute(2, 3, 0, 1)[:, :, :, None].expand(unit, unit, L, n_out, n_units).reshape(unit, unit, N)
        return cls(by_group(prob, prob.core), by_group(prob, prob.mask), valid.to(prob.core.dtype), gamma, p, q)

    def p_diag(self) -> Tensor:
        """P_rr of every row and pair, (b, N)."""
        return self.p.diagonal(dim1=0, dim2=1).T

    def pass_on(self, r: int, delta: Tensor) -> None:
        """Let the rows after r see row r's change delta (U, N) through Γ."""
        self.gamma[r + 1 :] += self.p[r][r + 1 :, None] * (delta[:, None] * self.q).sum(0)

    def write_back(self, prob: Problem) -> None:
        """Put the core and mask back into the problem and refresh it."""
        prob.core.copy_(from_groups(prob, self.core))
        prob.mask.copy_(from_groups(prob, self.mask))
        settle(prob)
