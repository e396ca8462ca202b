"""The exact group solve shared by the sparse-core step and the sweep: best 2-of-4 pattern and values of a group."""

import torch
from torch import Tensor

from armor.sparsity import GROUP, PATTERNS

RIDGE = 1e-12  # relative Tikhonov term: keeps singular 2x2 systems solvable; the true loss still decides


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
    quad = aa[:, None, None] * gram  # (N, 4, 4)
    quad_c = (quad @ current[..., None])[..., 0]  # (N, 4)
    lin = (b_rows @ (h * resid)[..., None])[..., 0] - quad_c  # (N, 4): linear term, group zeroed
    f_current = (current * (2 * lin + quad_c)).sum(-1)
    systems = pattern_systems(quad.permute(1, 2, 0))
    values, keep = best_patterns(lin.T, f_current, systems, current.T, current_keep.T)
    return values.T, keep.T


def pattern_systems(quad: Tensor) -> tuple[Tensor, Tensor]:
    """Per 2-of-4 pattern of quad (4, 4, *batch): its 2x2 block on the kept positions and that block's inverse with
    a relative ridge (zero where singular), both (6, 2, 2, *batch). Component dimensions lead, so every elementwise
    operation runs over the long batch dimensions."""
    idx = PATTERNS.to(quad.device)
    flat = (idx[:, :, None] * GROUP + idx[:, None, :]).flatten()  # (24,) positions in the flattened 4x4
    q2 = quad.flatten(0, 1).index_select(0, flat).unflatten(0, (6, 2, 2))
    p, q, r = q2[:, 0, 0], q2[:, 0, 1], q2[:, 1, 1]  # (6, *batch)
    ridge = RIDGE * (p + r) + torch.finfo(quad.dtype).tiny
    p, r = p + ridge, r + ridge
    det = p * r - q * q
    scale = torch.where(det > 0, det.reciprocal(), 0.0)  # a singular block solves to zero
    inverse = torch.stack([r * scale, -q * scale, -q * scale, p * scale], 1).unflatten(1, (2, 2))
    return q2, inverse


def pattern_losses(lin: Tensor, systems: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """f(v) = 2 vᵀ lin + vᵀ quad v at each of the six patterns' least-squares values, and those values: (6, *batch),
    (6, 2, *batch); lin (4, *batch), systems = pattern_systems(quad)."""
    q2, inverse = systems
    l2 = lin.index_select(0, PATTERNS.to(lin.device).flatten()).unflatten(0, (6, 2))  # (6, 2, *batch)
    v2 = -(inverse * l2[:, None]).sum(2)  # (6, 2, *batch): each pattern's least-squares values
    return (v2 * (2 * l2 + (q2 * v2[:, None]).sum(2))).sum(1), v2  # the true loss of each


def best_patterns(
    lin: Tensor, f_current: Tensor, systems: tuple[Tensor, Tensor], current: Tensor, current_keep: Tensor
) -> tuple[Tensor, Tensor]:
    """Minimise f(v) = 2 vᵀ lin + vᵀ quad v over the six 2-of-4 patterns of batched groups; keep the current values
    unless a pattern is strictly better.

    lin, current, current_keep: (4, *batch); f_current: (*batch) f at the current values; systems =
    pattern_systems(quad). Returns the values and keep-mask (4, *batch), the mask in current_keep's dtype.
    """
    f_patterns, v2 = pattern_losses(lin, systems)
    idx = PATTERNS.to(lin.device)
    f_best, best = f_patterns.min(0, keepdim=True)  # (1, *batch); min with indices is far faster than argmin on CPU
    take = f_best < f_current[None]  # (1, *batch)
    cols = idx.index_select(0, best.flatten()).T.reshape(2, *best.shape[1:])  # (2, *batch)
    chosen = v2.gather(0, best[None].expand(1, 2, *best.shape[1:]))[0]  # (2, *batch)
    values = torch.zeros_like(current).scatter_(0, cols, chosen)
    keep = torch.zeros_like(current_keep).scatter_(0, cols, True)
    return torch.where(take, values, current), torch.where(take, keep, current_keep)
