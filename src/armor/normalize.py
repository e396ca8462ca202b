"""NoWag normalisation: unit-norm columns, then unit-norm rows, with the norms kept."""

from typing import NamedTuple

from torch import Tensor

EPS = 1e-5


class Normalized(NamedTuple):
    """W = diag(r_out) · w_bar · diag(r_in)."""

    w_bar: Tensor  # (d_out, d_in)
    r_in: Tensor  # (d_in,)
    r_out: Tensor  # (d_out,)


def normalize(weight: Tensor, eps: float = EPS) -> Normalized:
    """Divide each column by its L2 norm, then each row of the result by its L2 norm."""
    r_in = weight.norm(dim=0) + eps
    scaled = weight / r_in
    r_out = scaled.norm(dim=1) + eps
    return Normalized(scaled / r_out[:, None], r_in, r_out)


def denormalize(w_bar: Tensor, r_in: Tensor, r_out: Tensor) -> Tensor:
    """Undo `normalize`: diag(r_out) · w_bar · diag(r_in)."""
    return r_out[:, None] * w_bar * r_in
