"""NoWag-P 2:4 pruning: importance W̄_ij² · h_j on the normalised weight."""

from typing import NamedTuple

from torch import Tensor

from armor.methods.base import LayerStats
from armor.normalize import normalize
from armor.sparsity import mask_24


class NoWagStart(NamedTuple):
    """The NoWag-P solution in the normalised space."""

    w_bar: Tensor  # (d_out, d_in) normalised dense weight
    mask: Tensor  # (d_out, d_in) bool 2:4 mask
    r_in: Tensor  # (d_in,)
    r_out: Tensor  # (d_out,)


def nowag_start(weight: Tensor, h: Tensor) -> NoWagStart:
    """Normalise W and keep the 2 most important of each group of 4 by W̄² · h."""
    w_bar, r_in, r_out = normalize(weight)
    return NoWagStart(w_bar, mask_24(w_bar.square() * h), r_in, r_out)


def prune(weight: Tensor, stats: LayerStats) -> Tensor:
    """Return W ⊙ M with M the NoWag-P mask (denormalising W̄ ⊙ M gives exactly this)."""
    return weight * nowag_start(weight, stats.h).mask
