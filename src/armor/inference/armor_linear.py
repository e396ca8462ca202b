"""The inference module: y = ((x · Bᵀ) · Wcoreᵀ) · Aᵀ with block-diagonal A, B and a 2:4 core."""

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def apply_blocks(x: Tensor, blocks: Tensor, d: int) -> Tensor:
    """x · Mᵀ for block-diagonal M given as blocks (n, b, b) over the last dimension d of x."""
    n, b, _ = blocks.shape
    padded = F.pad(x, (0, n * b - d)).unflatten(-1, (n, b))  # (..., n, b)
    out = torch.einsum("...nk,njk->...nj", padded, blocks)
    return out.flatten(-2)[..., :d]


def semi_structured_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """True where PyTorch's 2:4 sparse kernels run: CUDA, compute capability ≥ 8.0, fp16/bf16."""
    return (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


class ArmorLinear(nn.Module):
    """A linear layer with a 2:4 core and optional block-diagonal wrappers (norms folded in)."""

    def __init__(self, core: Tensor, a: Tensor | None = None, b: Tensor | None = None, is_24: bool = True) -> None:
        super().__init__()
        self.is_24 = is_24  # False only for the dense reference model
        self.out_features, self.in_features = core.shape
        self.weight = nn.Parameter(core, requires_grad=False)  # (d_out, d_in), 2:4; sparse layout after to_sparse()
        self.a = nn.Parameter(a, requires_grad=False) if a is not None else None  # (n_out, b, b)
        self.b = nn.Parameter(b, requires_grad=False) if b is not None else None  # (n_in, b, b)

    def to_sparse(self) -> bool:
        """Switch the core to PyTorch's semi-structured 2:4 layout where supported; True if switched."""
        if not self.is_24 or not semi_structured_supported(self.weight.device, self.weight.dtype):
            return False
        from torch.sparse import to_sparse_semi_structured

        try:
            sparse = to_sparse_semi_structured(self.weight.data)
        except (RuntimeError, ValueError) as err:  # e.g. a shape the kernels do not take
            log.warning("keeping a dense masked core for a %dx%d layer: %s", self.out_features, self.in_features, err)
            return False
        self.weight = nn.Parameter(sparse, requires_grad=False)
        return True

    def forward(self, x: Tensor) -> Tensor:
        if self.b is not None:
            x = apply_blocks(x, self.b, self.in_features)
        y = F.linear(x, self.weight)
        if self.a is not None:
            y = apply_blocks(y, self.a, self.out_features)
        return y

    def dense_weight(self) -> Tensor:
        """The equivalent dense weight A · core · B (d_out, d_in), for checks."""
        eye = torch.eye(self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return self.forward(eye).T

    def extra_repr(self) -> str:
        b = self.a.shape[-1] if self.a is not None else 0
        return f"in_features={self.in_features}, out_features={self.out_features}, block_size={b}"
