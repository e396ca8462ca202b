"""What a pruning method consumes (calibration statistics) and produces (a pruned layer)."""

from dataclasses import dataclass, field

from torch import Tensor


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
