"""SparseGPT 2:4 pruning: mask chosen column by column with the OBS weight update."""

import torch
from torch import Tensor

from armor.methods.base import LayerStats
from armor.sparsity import GROUP, mask_24

PERCDAMP = 0.01
BLOCKSIZE = 128


def prune(weight: Tensor, stats: LayerStats, percdamp: float = PERCDAMP, blocksize: int = BLOCKSIZE) -> Tensor:
    """Prune W to 2:4, compensating each removed weight on the not-yet-visited columns."""
    if stats.hessian is None:
        raise ValueError("sparsegpt needs the full input Gram matrix XᵀX/n")
    w = weight.clone()  # (d_out, d_in), updated in place
    hessian = stats.hessian.clone()  # (d_in, d_in)
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    w[:, dead] = 0
    hessian.diagonal().add_(percdamp * hessian.diagonal().mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)

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
