"""Wanda 2:4 pruning: score |W_ij| · ||X_j||₂ per output row."""

from torch import Tensor

from armor.methods.base import LayerStats
from armor.sparsity import mask_24


def prune(weight: Tensor, stats: LayerStats) -> Tensor:
    """Return W with the 2 lowest-scoring weights of each group of 4 set to zero."""
    return weight * mask_24(weight.abs() * stats.h.sqrt())
