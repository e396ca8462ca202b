"""A final refit of the kept core values on the whole XᵀX/n (ours, `refit_steps`): the correlations B cannot hold.

B is block-diagonal, so neither proxy sees how inputs in different blocks of B co-vary, and on SmolLM2 a quarter to
two fifths of a layer's true output error lies there (docs/method.md). With A, B and the mask fixed, the loss on the
whole damped H = XᵀX/n,

    f(C) = tr(E H Eᵀ) / tr(W̄ H W̄ᵀ),   E = A · C · B − W̄ (NoWag's normalised space),

is a quadratic in the kept values C with Hessian C ↦ (AᵀA · C · B H Bᵀ) ⊙ M. Rows in different blocks of A do not
interact, so preconditioned conjugate gradient runs on each row block of A as its own problem (one step length per
block), from the solver's core, with the Hessian's diagonal as preconditioner (zero where the diagonal is, so
padded positions never move). A layer keeps the refit only where f fell.
"""

import torch
from torch import Tensor

from armor import damping
from armor.optimizer import blockdiag as bd
from armor.optimizer.problem import Problem


def damped_covariance(covariance: Tensor, prob: Problem, damp: float = damping.DAMP) -> Tensor:
    """XᵀX/n (L, d_in, d_in) zero-padded to (L, P_in, P_in), plus damp · mean diag on the real inputs' diagonal."""
    L, d_in = covariance.shape[:2]
    padded = covariance.new_zeros(L, prob.cols.padded, prob.cols.padded)
    padded[:, :d_in, :d_in] = covariance
    padded.diagonal(dim1=1, dim2=2)[:, :d_in] += damping.amount(covariance, damp)[:, None]
    return padded


class FullLoss:
    """The loss on the whole damped XᵀX/n of a problem's layers, at its A and B, as a function of the core."""

    def __init__(self, prob: Problem, covariance: Tensor) -> None:
        self.prob = prob
        self.b = prob.b_blocks()  # B of Ŵ = A·C·B, (L, n_in, b, b)
        self.w_bar = prob.w_bar if prob.b_inverse is None else bd.right(prob.w_bar, prob.b_inverse)  # W̄, grid
        self.h = damped_covariance(covariance, prob)  # (L, P_in, P_in)
        self.p = prob.a.transpose(-1, -2) @ prob.a  # AᵀA, (L, n_out, b, b)
        h_grid = bd.grid(self.h, prob.cols, prob.cols)
        self.g = bd.right(bd.left(self.b, h_grid), self.b.transpose(-1, -2)).view_as(self.h)  # B H Bᵀ
        self.z = self._quadratic(self.w_bar)

    def _flat(self, grid: Tensor) -> Tensor:
        """A grid (L, n_out, b, n_in, b) as padded matrices (L, P_out, P_in)."""
        return grid.reshape(grid.shape[0], -1, self.h.shape[-1])

    def _quadratic(self, e: Tensor, eh: Tensor | None = None) -> Tensor:
        """tr(E H Eᵀ) per layer (L,), in float64, from E and, where already formed, E H (flat)."""
        eh = torch.bmm(self._flat(e), self.h) if eh is None else eh
        return (eh * self._flat(e)).sum((1, 2), dtype=torch.float64)

    def error(self, core: Tensor) -> Tensor:
        """E = A · C · B − W̄ in grid form."""
        return bd.left(self.prob.a, bd.right(core, self.b)) - self.w_bar

    def loss(self, core: Tensor) -> Tensor:
        """f(C) per layer (L,), in float64."""
        return self._quadratic(self.error(core)) / self.z

    def loss_and_descent(self, core: Tensor) -> tuple[Tensor, Tensor]:
        """f(C) per layer (L,) and −∂/∂C of tr(E H Eᵀ) / 2 on the kept positions, −Aᵀ E H Bᵀ ⊙ M (grid), from
        one product E H."""
        e = self.error(core)
        eh = torch.bmm(self._flat(e), self.h)
        descent = bd.left(self.prob.a.transpose(-1, -2), bd.right(eh.view_as(core), self.b.transpose(-1, -2)))
        return self._quadratic(e, eh) / self.z, descent.mul_(self.prob.mask).neg_()

    def hessian_product(self, direction: Tensor) -> Tensor:
        """(AᵀA · D · B H Bᵀ) ⊙ M for a direction D in grid form."""
        dg = torch.bmm(self._flat(direction), self.g).view_as(direction)
        return bd.left(self.p, dg).mul_(self.prob.mask)

    def diagonal(self) -> Tensor:
        """The Hessian's diagonal on the kept positions, (AᵀA)_ii (B H Bᵀ)_jj ⊙ M, grid."""
        L, n_out, b, n_in, _ = self.prob.core.shape
        p_diag = self.p.diagonal(dim1=-2, dim2=-1).reshape(L, n_out, b, 1, 1)
        g_diag = self.g.diagonal(dim1=-2, dim2=-1).reshape(L, 1, 1, n_in, b)
        return p_diag * g_diag * self.prob.mask


def _row_block_dot(x: Tensor, y: Tensor) -> Tensor:
    """Inner product over each row block of A, (L, n_out, 1, 1, 1), summed in float64."""
    return (x * y).sum((2, 3, 4), keepdim=True, dtype=torch.float64)


def refit_core(prob: Problem, covariance: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """`steps` preconditioned CG steps on the kept core values of every layer against the whole XᵀX/n (L, d_in, d_in);
    the problem's core moves only in the layers whose full loss fell. The full loss before and after, each (L,)."""
    full = FullLoss(prob, covariance)
    tiny, dt = torch.finfo(torch.float64).tiny, prob.core.dtype
    diagonal = full.diagonal()
    inverse = torch.where(diagonal > 0, diagonal.reciprocal(), 0.0)  # padded positions never move
    core = prob.core.clone()
    start, residual = full.loss_and_descent(core)
    direction = residual * inverse
    rz = _row_block_dot(residual, direction)
    for _ in range(steps):
        product = full.hessian_product(direction)
        curvature = _row_block_dot(direction, product)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(tiny), 0.0).to(dt)
        core.addcmul_(alpha, direction)
        residual.addcmul_(-alpha, product)
        z = residual * inverse
        rz_next = _row_block_dot(residual, z)
        beta = torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0.0).to(dt)
        direction, rz = z.addcmul_(beta, direction), rz_next
    end = full.loss(core)
    fell = end < start
    prob.core.copy_(torch.where(fell[:, None, None, None, None], core, prob.core))
    prob.refresh()
    return start, torch.where(fell, end, start)
