"""The damping added to an input covariance XᵀX/n before it is factored: λ = damp · mean diag(XᵀX/n), as SparseGPT's
percdamp, raised tenfold, up to six times, where the factorisation fails."""

from torch import Tensor

DAMP = 0.01
GROWTH, RETRIES = 10.0, 6


def amount(covariance: Tensor, damp: float) -> Tensor:
    """λ = damp · mean diagonal of each (…, d, d) covariance, shaped (…)."""
    return damp * covariance.diagonal(dim1=-2, dim2=-1).mean(-1)


def levels(damp: float) -> list[float]:
    """The damping factors to try in turn: damp, then ten times more each retry."""
    return [damp * GROWTH**attempt for attempt in range(RETRIES + 1)]
