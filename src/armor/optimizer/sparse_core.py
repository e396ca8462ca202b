"""The exact sparse-core step: best 2-of-4 pattern and values for one group per block pair."""

import torch
from torch import Tensor

from armor.sparsity import PATTERNS

RIDGE = 1e-12  # relative Tikhonov term: keeps singular 2x2 systems solvable; the true loss still decides


def group_loss(v: Tensor, lin: Tensor, quad: Tensor) -> Tensor:
    """f(v) = 2 vᵀ lin + vᵀ quad v over batched groups: v, lin (..., k); quad (..., k, k)."""
    return 2 * (v * lin).sum(-1) + (v[..., None, :] @ quad @ v[..., :, None])[..., 0, 0]


def solve_groups(
    a: Tensor, b_rows: Tensor, h: Tensor, resid: Tensor, current: Tensor, current_keep: Tensor
) -> tuple[Tensor, Tensor]:
    """Best pattern and values for each selected group, every other weight fixed.

    For a group in row r (A column a) and columns S (B rows B_S), changing the core values from
    c to v changes W_hat by a (v - c)ᵀ B_S, so the loss change is the quadratic f(v) - f(c) with
    f(v) = 2 vᵀ g + ‖a‖² vᵀ G v, G = B_S diag(h) B_Sᵀ, g = B_S (h ⊙ Rᵀa) - ‖a‖² G c.

    a: (N, b) column of A; b_rows: (N, 4, U) the group's rows of B; h: (N, U) activation weights;
    resid: (N, U) Rᵀa, the residual (W_hat - W̄) of the block row contracted with a; current: (N, 4)
    values and current_keep: (N, 4) bool mask of the group now.
    Returns the new values (N, 4) and the new keep-mask (N, 4); a group changes only if its loss falls.
    """
    aa = a.square().sum(-1)  # (N,)
    gram = (b_rows * h[:, None, :]) @ b_rows.transpose(-1, -2)  # (N, 4, 4)
    lin = b_rows @ (h * resid)[..., None]  # (N, 4, 1)
    lin = (lin - aa[:, None, None] * (gram @ current[..., None]))[..., 0]  # (N, 4): linear term, group zeroed
    quad = aa[:, None, None] * gram  # (N, 4, 4)

    idx = PATTERNS.to(a.device)
    q2 = quad[:, idx[:, :, None], idx[:, None, :]]  # (N, 6, 2, 2)
    l2 = lin[:, idx]  # (N, 6, 2)
    ridge = RIDGE * (q2[..., 0, 0] + q2[..., 1, 1]) + torch.finfo(a.dtype).tiny
    p, q, r = q2[..., 0, 0] + ridge, q2[..., 0, 1], q2[..., 1, 1] + ridge
    det = p * r - q * q
    v2 = -torch.stack([r * l2[..., 0] - q * l2[..., 1], p * l2[..., 1] - q * l2[..., 0]], -1) / det[..., None]
    v2 = torch.where(torch.isfinite(v2), v2, torch.zeros_like(v2))
    f_patterns = group_loss(v2, l2, q2)  # (N, 6): the true loss of each candidate
    f_current = group_loss(current, lin, quad)  # (N,)
    best = f_patterns.argmin(-1)
    f_best = f_patterns.gather(-1, best[:, None])[:, 0]
    take = f_best < f_current

    values = torch.zeros_like(current).scatter_(-1, idx[best], v2[torch.arange(len(best)), best])
    keep = torch.zeros_like(current, dtype=torch.bool).scatter_(-1, idx[best], True)
    values = torch.where(take[:, None], values, current)
    keep = torch.where(take[:, None], keep, current_keep)
    return values, keep
