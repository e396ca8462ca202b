"""Magnitude 2:4 pruning: keep the 2 largest |W| in every group of 4."""

from torch import Tensor

from armor.methods.base import LayerStats
from armor.sparsity import mask_24


def prune(weight: Tensor, stats: LayerStats) -> Tensor:
    """Return W with the 2 smallest-magnitude weights of each group of 4 set to zero."""
    return weight * mask_24(weight.abs())
