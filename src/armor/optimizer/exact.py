"""The exact continuous step (not the paper's): closed-form A and B block updates, then conjugate gradient on the core.

The loss is quadratic in A alone, in B alone and in the kept core values alone (paper §4), so each part can be
minimised given the rest:
- A_p = W̄_p H Y_pᵀ (Y_p H Y_pᵀ)⁻¹ with Y = C·B and H = diag(h), solved here as a correction to the current A;
- B_q = (X_qᵀ X_q)⁻¹ X_qᵀ W̄_q with X = A·C (h drops out column by column), also as a correction;
- a few conjugate-gradient steps on the kept core values, with Hessian product Aᵀ((A V B) ⊙ 2h/z) Bᵀ ⊙ M.
Each part is a minimisation, so the loss cannot rise; a layer whose loss still rose by rounding is restored.
"""

import torch
from torch import Tensor

from armor.optimizer import blockdiag as bd
from armor.optimizer.monotone import guarded
from armor.optimizer.problem import Problem

RIDGE = 1e-9  # relative to the mean diagonal of each Gram matrix; Grams are solved in float64


def _solve(gram: Tensor, rhs: Tensor) -> Tensor:
    """X with gram · X = rhs for symmetric PSD gram (..., b, b), in float64 with a relative ridge.

    Indices whose Gram row is zero (padding, dead features) get a unit diagonal, so their solution is zero.
    """
    g = gram.double()
    diag = g.diagonal(dim1=-2, dim2=-1)
    scale = diag.mean(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    g = g + torch.diag_embed(RIDGE * scale + (diag == 0).double())
    return torch.linalg.solve(g, rhs.double()).to(gram.dtype)


def update_a(prob: Problem) -> None:
    """Set every block of A to its least-squares optimum given C and B (all layers)."""
    weighted = prob.resid * prob.h_grid  # R H, grid
    gram = bd.row_gram(prob.cb * prob.h_grid, prob.cb)  # Y_p H Y_pᵀ, (L, n_out, b, b)
    step = bd.row_gram(weighted, prob.cb)  # R_p H Y_pᵀ
    prob.a.sub_(_solve(gram, step.transpose(-1, -2)).transpose(-1, -2))  # A ← A − R H Yᵀ (Y H Yᵀ)⁻¹
    prob.refresh_residual()


def update_b(prob: Problem) -> None:
    """Set every block of B to its least-squares optimum given A and C (all layers)."""
    x = bd.columns(bd.left(prob.a, prob.core))  # X = A·C, column blocks
    gram = bd.column_gram(x, x)  # X_qᵀ X_q, (L, n_in, b, b)
    step = bd.column_gram(x, bd.columns(prob.resid))  # X_qᵀ R_q
    prob.b.sub_(_solve(gram, step))  # B ← B − (XᵀX)⁻¹ Xᵀ R
    prob.refresh()


def conjugate_gradient_core(prob: Problem, steps: int, active: Tensor) -> None:
    """`steps` conjugate-gradient steps with exact line search on the kept core values of the active layers."""
    shape = (-1,) + (1,) * (prob.core.dim() - 1)

    def dot(x: Tensor, y: Tensor) -> Tensor:
        """Per-layer inner products (L,) in float64."""
        return (x * y).sum(tuple(range(1, x.dim())), dtype=torch.float64)

    residual = -prob.core_gradient() * prob.mask  # negative gradient on kept values
    direction = residual.clone()
    for _ in range(steps):
        pb, apb, hd = prob.hessian_product(direction)
        curvature = dot(direction, hd)
        alpha = torch.where(active & (curvature > 0), dot(residual, direction) / curvature, 0.0)
        alpha_g = alpha.to(prob.core.dtype).view(shape)
        prob.core.add_(alpha_g * direction)
        prob.cb.add_(alpha_g * pb)
        prob.resid.add_(alpha_g * apb)
        before = dot(residual, residual)
        residual.sub_(alpha_g * hd)
        beta = torch.where(before > 0, dot(residual, residual) / before, 0.0)
        direction = residual + beta.to(prob.core.dtype).view(shape) * direction
    prob.loss = prob.loss_of(prob.resid)


def exact_step(prob: Problem, cg_steps: int, active: Tensor) -> None:
    """A, B and core updates in turn for the active layers; a layer whose loss rose by rounding is restored."""

    def step(p: Problem) -> None:
        """The three minimisations."""
        update_a(p)
        update_b(p)
        conjugate_gradient_core(p, cg_steps, active)

    guarded(prob, active, step)
