"""What pruning one linear layer produces."""

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LayerResult:
    """A pruned linear layer: the weight the model uses, plus any factors to keep."""

    weight: Tensor  # (d_out, d_in) reconstructed weight
    extras: dict[str, Tensor] = field(default_factory=dict)
