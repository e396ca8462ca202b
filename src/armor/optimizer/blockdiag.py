"""Block-diagonal matrices stored as (n_blocks, b, b), with a zero-padded ragged last block."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Layout:
    """How a dimension d is cut into blocks of size b, padded up to a multiple of `multiple`."""

    d: int
    b: int
    multiple: int

    @property
    def padded(self) -> int:
        """The dimension padded to a whole number of units."""
        return math.ceil(self.d / self.multiple) * self.multiple

    @property
    def n_blocks(self) -> int:
        """Blocks of size b covering the padded dimension."""
        return self.padded // self.b


def layout(d: int, b: int, group: int = 1) -> Layout:
    """Blocks of size b over d; the padded size is a multiple of lcm(b, group) so groups never straddle."""
    if b < 1:
        raise ValueError(f"block size must be >= 1, got {b}")
    return Layout(d, b, math.lcm(b, group))


def block_params(d: int, b: int) -> int:
    """Entries of the real (unpadded) blocks of a d x d block-diagonal matrix with block size b."""
    return (d // b) * b * b + (d % b) ** 2


def identity(lay: Layout, batch: int = 1, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Identity blocks (batch, n_blocks, b, b), zero on padded indices so padding never leaks."""
    diag = (torch.arange(lay.padded, device=device) < lay.d).to(dtype).reshape(lay.n_blocks, lay.b)
    return torch.diag_embed(diag).expand(batch, -1, -1, -1).clone()


def pad(x: Tensor, rows: Layout, cols: Layout) -> Tensor:
    """Zero-pad (..., d_out, d_in) to (..., rows.padded, cols.padded)."""
    return F.pad(x, (0, cols.padded - x.shape[-1], 0, rows.padded - x.shape[-2]))


def unpad(x: Tensor, rows: Layout, cols: Layout) -> Tensor:
    """Crop (..., padded_out, padded_in) back to (..., d_out, d_in)."""
    return x[..., : rows.d, : cols.d]


def grid(x: Tensor, rows: Layout, cols: Layout) -> Tensor:
    """View padded (L, P_out, P_in) as (L, n_out, b, n_in, b) for block products."""
    return x.reshape(x.shape[0], rows.n_blocks, rows.b, cols.n_blocks, cols.b)


def left(a: Tensor, x: Tensor) -> Tensor:
    """A · X for block-diagonal A (L, n_out, b, b) and X in grid form (L, n_out, b, n_in, b); contiguous."""
    L, n_out, b = x.shape[:3]
    return torch.bmm(a.reshape(L * n_out, b, b), x.reshape(L * n_out, b, -1)).view(x.shape)


def columns(x: Tensor) -> Tensor:
    """A grid (L, n_out, b, n_in, b) as column blocks (L, n_in, P_out, b), contiguous: block q is X[:, q's columns]."""
    L, n_out, b, n_in, _ = x.shape
    return x.reshape(L, n_out * b, n_in, b).transpose(1, 2).contiguous()


def from_columns(xc: Tensor, n_out: int) -> Tensor:
    """Column blocks (L, n_in, P_out, b) back as a contiguous grid (L, n_out, b, n_in, b)."""
    L, n_in, p_out, b = xc.shape
    return xc.transpose(1, 2).reshape(L, n_out, p_out // n_out, n_in, b).contiguous()


def right_columns(xc: Tensor, b: Tensor) -> Tensor:
    """X · B on column blocks (L, n_in, P_out, b) for block-diagonal B (L, n_in, b, b); column blocks."""
    L, n_in, p_out, bs = xc.shape
    return torch.bmm(xc.view(L * n_in, p_out, bs), b.reshape(L * n_in, bs, bs)).view(xc.shape)


def right(x: Tensor, b: Tensor) -> Tensor:
    """X · B for X in grid form (L, n_out, b, n_in, b) and block-diagonal B (L, n_in, b, b); contiguous."""
    return from_columns(right_columns(columns(x), b), x.shape[1])


def row_gram(x: Tensor, y: Tensor) -> Tensor:
    """X_p Y_pᵀ for every row block p of two grids (L, n_out, b, n_in, b): (L, n_out, b, b)."""
    L, n_out, b = x.shape[:3]
    return torch.bmm(x.reshape(L * n_out, b, -1), y.reshape(L * n_out, b, -1).transpose(1, 2)).view(L, n_out, b, b)


def column_gram(xc: Tensor, yc: Tensor) -> Tensor:
    """X_qᵀ Y_q for every column block q of two column-block tensors (L, n_in, P_out, b): (L, n_in, b, b)."""
    L, n_in, p_out, b = xc.shape
    return torch.bmm(xc.view(L * n_in, p_out, b).transpose(1, 2), yc.reshape(L * n_in, p_out, b)).view(L, n_in, b, b)


def dense(blocks: Tensor, lay: Layout) -> Tensor:
    """The d x d matrix of blocks (n_blocks, b, b), for checks."""
    return torch.block_diag(*blocks)[: lay.d, : lay.d]


def merge(blocks: Tensor, unit: int) -> Tensor:
    """Regroup blocks (L, n, b, b) into larger block-diagonal blocks (L, n*b/unit, unit, unit)."""
    L, n, b, _ = blocks.shape
    if unit == b:
        return blocks
    per = unit // b
    out = blocks.new_zeros(L, n // per, unit, unit)
    for k in range(per):
        out[:, :, k * b : (k + 1) * b, k * b : (k + 1) * b] = blocks[:, k::per]
    return out
