"""What a pruning method consumes (calibration statistics) and produces (a pruned layer)."""

import logging
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class LayerStats:
    """Input statistics of one linear layer over n calibration tokens."""

    h: Tensor  # (d_in,) diag(XᵀX) / n: mean squared activation per input feature
    n: int
    hessian: Tensor | None = None  # (d_in, d_in) XᵀX / n, only for methods that need it


@dataclass
class LayerResult:
    """A pruned linear layer: the weight the model uses, plus any factors to keep."""

    weight: Tensor  # (d_out, d_in) reconstructed weight
    extras: dict[str, Tensor] = field(default_factory=dict)  # saved with the run: ARMOR's core, A, B, norms, trace
    info: dict[str, int | float] = field(default_factory=dict)  # scalars for the run's summary (ARMOR's guard counts)

    def __getattr__(self, name: str) -> Tensor:
        """Extras by attribute: `result.core`, `result.A`, `result.B`, `result.trace`."""
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} has no {name!r} (extras: {sorted(extras)})")


def fill_dead_inputs(stats: dict[str, LayerStats]) -> dict[str, LayerStats]:
    """Each layer's h with entries <= 0 (inputs no calibration token used) set to the mean of its positive entries, as
    the official NoWag and ARMOR code does (1 where none is positive); non-finite h is a ValueError naming the layer."""
    out = {}
    for name, layer in stats.items():
        h = layer.h  # (d_in,)
        if not bool(torch.isfinite(h).all()):
            raise ValueError(f"h of layer {name} has NaN or infinite entries")
        dead = h <= 0
        if dead.any():
            fill = h[~dead].mean() if (~dead).any() else torch.ones((), dtype=h.dtype, device=h.device)
            log.info("%s: %d of %d inputs have h <= 0; set to the mean of the others", name, int(dead.sum()), h.numel())
            layer = replace(layer, h=torch.where(dead, fill, h))
        out[name] = layer
    return out
