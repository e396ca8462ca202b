"""The NoWag proxy loss: activation-weighted error in the normalised space, relative to zero."""

from torch import Tensor

from armor.normalize import normalize


def proxy_loss(w_hat_bar: Tensor, w_bar: Tensor, h: Tensor) -> Tensor:
    """Σ h_j (Ŵ_ij − W̄_ij)² / Σ h_j W̄_ij²; 1 for the zero matrix, 0 for an exact copy."""
    return ((w_hat_bar - w_bar).square() * h).sum() / (w_bar.square() * h).sum()


def relative_loss(weight: Tensor, pruned: Tensor, h: Tensor) -> float:
    """Proxy loss of a pruned weight against its dense original, normalised by the dense norms."""
    w_bar, r_in, r_out = normalize(weight)
    return float(proxy_loss(pruned / r_out[:, None] / r_in, w_bar, h))
