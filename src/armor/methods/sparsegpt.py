"""SparseGPT 2:4 pruning: mask chosen column by column with the OBS weight update."""

import logging

import torch
from torch import Tensor

from armor import damping
from armor.methods.base import LayerStats
from armor.sparsity import GROUP, mask_24

log = logging.getLogger(__name__)

BLOCKSIZE = 128


def inverse_cholesky(hessian: Tensor, percdamp: float) -> Tensor:
    """The upper Cholesky factor of (H + λ I)⁻¹, λ = percdamp · mean diag(H), retried with more damping where H + λ I
    is not positive definite (as the Wanda repository's copy of SparseGPT does); ValueError if every retry fails."""
    eye = torch.eye(len(hessian), dtype=hessian.dtype, device=hessian.device)
    for attempt, damp in enumerate(damping.levels(percdamp)):
        factor, info = torch.linalg.cholesky_ex(hessian + damping.amount(hessian, damp) * eye)
        if info == 0:
            inverse, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(factor), upper=True)
        if info == 0:
            if attempt:
                log.warning("sparsegpt: Cholesky failed at percdamp %g; pruned with percdamp %g", percdamp, damp)
            return inverse
    raise ValueError(f"sparsegpt: the Hessian is not positive definite even at percdamp {damp:g}")


def prune(weight: Tensor, stats: LayerStats, percdamp: float = damping.DAMP, blocksize: int = BLOCKSIZE) -> Tensor:
    """Prune W to 2:4, compensating each removed weight on the not-yet-visited columns."""
    if stats.hessian is None:
        raise ValueError("sparsegpt needs the full input Gram matrix XᵀX/n")
    w = weight.clone()  # (d_out, d_in), updated in place
    hessian = stats.hessian.clone()  # (d_in, d_in)
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    w[:, dead] = 0
    hinv = inverse_cholesky(hessian, percdamp)  # (d_in, d_in) upper

    d_in = w.shape[1]
    for start in range(0, d_in, blocksize):
        stop = min(start + blocksize, d_in)
        w1 = w[:, start:stop].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[start:stop, start:stop]
        pruned = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(stop - start):
            if i % GROUP == 0:
                scores = w1[:, i : i + GROUP].square() / hinv1.diagonal()[i : i + GROUP].square()
                pruned[:, i : i + GROUP] = ~mask_24(scores)
            col = w1[:, i]
            kept = col.masked_fill(pruned[:, i], 0.0)
            err = (col - kept) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = kept
            err1[:, i] = err
        w[:, start:stop] = w1
        w[:, stop:] -= err1 @ hinv[start:stop, stop:]
    return w
