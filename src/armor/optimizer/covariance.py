"""The block-covariance proxy as a change of variables: B absorbs the Cholesky factors of the inputs' covariance blocks.

The diagonal proxy weights each input of the normalised error E = Ŵ − W̄ by its mean squared activation h_j. The
block-covariance proxy Σ_q tr(E_q H_q E_qᵀ) keeps the inputs' correlations within each of B's blocks q (H_q: the q-th
b × b diagonal block of XᵀX/n, damped). With H_q = L_q L_qᵀ, E_q L_q = A C (B_q L_q) − W̄_q L_q, and B_q L_q is again
any b × b block, so the problem in (A, C, B̃ = B L) against W̄ L with h = 1 is the diagonal-proxy problem every solver
already runs; B = B̃ L⁻¹ afterwards.
"""

import logging

import torch
from torch import Tensor

from armor import damping
from armor.optimizer.blockdiag import Layout

log = logging.getLogger(__name__)


def covariance_blocks(covariance: Tensor, cols: Layout) -> Tensor:
    """The b × b diagonal blocks of XᵀX/n (L, d_in, d_in) on the padded layout, (L, n_blocks, b, b); padded inputs
    get the identity, so they stay outside the loss (their h is 0) and their factor is invertible."""
    L, d_in = covariance.shape[:2]
    b, whole = cols.b, d_in // cols.b
    blocks = torch.eye(b, dtype=covariance.dtype, device=covariance.device).repeat(L, cols.n_blocks, 1, 1)
    if whole:
        tiles = covariance.unfold(1, b, b).unfold(2, b, b)  # (L, whole, whole, b, b): [l, p, q] = block (p, q), a view
        blocks[:, :whole] = tiles.diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)
    if d_in % b:
        blocks[:, whole, : d_in % b, : d_in % b] = covariance[:, whole * b :, whole * b :]
    return blocks


def whitening(covariance: Tensor, cols: Layout, damp: float = damping.DAMP) -> tuple[Tensor, Tensor]:
    """Lower Cholesky factors L_q of the damped covariance blocks and their inverses, each (L, n_blocks, b, b), zero
    on padded inputs; a layer whose blocks are not positive definite is retried with more damping (ValueError if
    every retry fails)."""
    blocks = covariance_blocks(covariance, cols)
    L, d_in = covariance.shape[:2]
    real = (torch.arange(cols.padded, device=covariance.device) < d_in).to(covariance.dtype).view(cols.n_blocks, cols.b)
    eye = torch.diag_embed(real)  # (n_blocks, b, b): the damping on real inputs only
    factor = torch.empty_like(blocks)
    todo = torch.ones(L, dtype=torch.bool, device=covariance.device)
    for attempt, scale in enumerate(damping.levels(damp)):
        tried, info = torch.linalg.cholesky_ex(blocks[todo] + damping.amount(covariance, scale)[todo, None, None, None] * eye)
        ok = (info == 0).all(-1)
        factor[todo.nonzero()[ok, 0]] = tried[ok]
        if attempt and ok.any():
            log.warning("block covariance: Cholesky failed at damping %g for %d layer(s); used %g", damp, int(ok.sum()), scale)
        todo[todo.clone()] = ~ok
        if not todo.any():
            keep = real[:, :, None] * real[:, None, :]  # (n_blocks, b, b)
            return factor * keep, torch.linalg.inv(factor) * keep
    raise ValueError(f"block covariance: a layer's XᵀX blocks are not positive definite even at damping {scale:g}")
