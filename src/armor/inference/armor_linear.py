"""A 2:4 linear layer with optional block-diagonal wrappers: y = ((x · Bᵀ) · Wcoreᵀ) · Aᵀ + bias.

Self-contained (torch only): armor-repro copies this file into every packed model folder, where the folder's
modelling code imports it, so the folder loads with plain transformers on a machine without armor-repro.

On disk the core is its kept values (d_out, d_in/2) plus one 4-bit pattern id per group of 4 inputs, two per byte
(d_out, d_in/8); the wrappers are blocks (n, b, b) with the NoWag norms folded in and zero-padded last blocks.
At the first forward the core is decompressed once: to PyTorch's semi-structured 2:4 layout on a CUDA GPU with
compute capability >= 8.0 in fp16/bf16, otherwise to a dense masked weight (same outputs).
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

GROUP, KEEP = 4, 2
PATTERNS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])  # the 6 ways to keep 2 of 4
CODE_TO_PATTERN = torch.full((GROUP * GROUP,), -1, dtype=torch.long)  # first * 4 + second kept position -> id
CODE_TO_PATTERN[PATTERNS[:, 0] * GROUP + PATTERNS[:, 1]] = torch.arange(len(PATTERNS))


def compress_24(weight: Tensor) -> tuple[Tensor, Tensor]:
    """2:4 weight (d_out, d_in) -> kept values (d_out, d_in/2) and pattern ids, two per byte (d_out, ceil(d_in/8))."""
    groups = weight.reshape(weight.shape[0], -1, GROUP)
    nonzero = groups != 0
    if (nonzero.sum(-1) > KEEP).any():
        raise ValueError("weight is not 2:4: a group of 4 holds more than 2 non-zeros")
    order = nonzero.float() * GROUP - torch.arange(GROUP, dtype=torch.float32, device=weight.device)  # non-zeros first, then leftmost
    kept = order.topk(KEEP, dim=-1).indices.sort(-1).values  # (d_out, n_groups, 2)
    ids = CODE_TO_PATTERN.to(weight.device)[kept[..., 0] * GROUP + kept[..., 1]].to(torch.uint8)
    if ids.shape[-1] % 2:
        ids = F.pad(ids, (0, 1))
    return groups.gather(-1, kept).reshape(weight.shape[0], -1), ids[..., 0::2] | (ids[..., 1::2] << 4)


def decompress_24(values: Tensor, patterns: Tensor, d_in: int) -> Tensor:
    """Inverse of `compress_24`: the dense 2:4 weight (d_out, d_in)."""
    ids = torch.stack([patterns & 0xF, patterns >> 4], -1).reshape(patterns.shape[0], -1)[:, : d_in // GROUP].long()
    kept = PATTERNS.to(values.device)[ids]  # (d_out, n_groups, 2)
    dense = values.new_zeros(values.shape[0], d_in // GROUP, GROUP)
    dense.scatter_(-1, kept, values.reshape(values.shape[0], -1, KEEP))
    return dense.reshape(values.shape[0], d_in)


def apply_blocks(x: Tensor, blocks: Tensor, d: int) -> Tensor:
    """x · Mᵀ for block-diagonal M given as blocks (n, b, b) over the last dimension d of x, as one batched matmul."""
    n, b, _ = blocks.shape
    lead = x.shape[:-1]
    padded = F.pad(x.reshape(-1, d), (0, n * b - d)).view(-1, n, b).transpose(0, 1)  # (n, tokens, b)
    out = torch.bmm(padded, blocks.transpose(1, 2))  # (n, tokens, b)
    return out.transpose(0, 1).reshape(*lead, n * b)[..., :d]


def semi_structured_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """True where PyTorch's 2:4 sparse kernels run: CUDA, compute capability >= 8.0, fp16/bf16."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and torch.cuda.get_device_capability(device) >= (8, 0)


class ArmorLinear(nn.Module):
    """A linear layer with a compressed 2:4 core, optional block-diagonal A and B (norms folded in) and optional bias."""

    def __init__(self, in_features: int, out_features: int, block_size: int = 0, bias: bool = False, sparse: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.block_size, self.sparse = in_features, out_features, block_size, sparse
        if sparse:  # (d_out, d_in/2) kept values and (d_out, d_in/8) packed pattern ids
            self.values = nn.Parameter(torch.empty(out_features, in_features // KEEP, dtype=dtype, device=device), requires_grad=False)
            self.register_buffer("patterns", torch.zeros(out_features, -(-in_features // (2 * GROUP)), dtype=torch.uint8, device=device))
        else:  # the dense reference
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device), requires_grad=False)
        if block_size:
            unit = math.lcm(block_size, GROUP)  # B's padding keeps groups of 4 whole
            n_out, n_in = -(-out_features // block_size), -(-in_features // unit) * unit // block_size
            self.A = nn.Parameter(torch.empty(n_out, block_size, block_size, dtype=dtype, device=device), requires_grad=False)
            self.B = nn.Parameter(torch.empty(n_in, block_size, block_size, dtype=dtype, device=device), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None
        self._core: Tensor | None = None  # decompressed core, built at the first forward

    @classmethod
    def from_core(cls, core: Tensor, a: Tensor | None = None, b: Tensor | None = None, bias: Tensor | None = None, sparse: bool = True) -> "ArmorLinear":
        """A layer holding a dense 2:4 core (d_out, d_in), wrapper blocks (n, b, b) and a bias."""
        layer = cls(core.shape[1], core.shape[0], 0 if a is None else a.shape[-1], bias is not None, sparse, core.dtype, core.device)
        with torch.no_grad():
            if sparse:
                values, patterns = compress_24(core)
                layer.values.copy_(values)
                layer.patterns.copy_(patterns)
            else:
                layer.weight.copy_(core)
            if a is not None:
                if a.shape != layer.A.shape or b.shape != layer.B.shape:
                    raise ValueError(f"wrapper blocks {tuple(a.shape)}, {tuple(b.shape)} do not fit a {tuple(core.shape)} layer")
                layer.A.copy_(a)
                layer.B.copy_(b)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def core(self) -> Tensor:
        """The 2:4 core for the matmul: semi-structured where supported, else dense masked (built once)."""
        if not self.sparse:
            return self.weight
        if self._core is None or self._core.device != self.values.device or self._core.dtype != self.values.dtype:
            dense = decompress_24(self.values, self.patterns, self.in_features)
            self._core = dense
            if semi_structured_supported(dense.device, dense.dtype):
                from torch.sparse import to_sparse_semi_structured

                try:
                    self._core = to_sparse_semi_structured(dense)
                except (RuntimeError, ValueError) as err:  # a shape the kernels do not take
                    log.warning("keeping a dense masked core for a %dx%d layer: %s", self.out_features, self.in_features, err)
        return self._core

    def uses_sparse_kernel(self) -> bool:
        """Whether the core runs on PyTorch's semi-structured 2:4 kernels."""
        from torch.sparse import SparseSemiStructuredTensor

        return isinstance(self.core(), SparseSemiStructuredTensor)

    def _product(self, x: Tensor) -> Tensor:
        """x · (A · core · B)ᵀ."""
        if self.block_size:
            x = apply_blocks(x, self.B, self.in_features)
        y = F.linear(x, self.core())
        return apply_blocks(y, self.A, self.out_features) if self.block_size else y

    def forward(self, x: Tensor) -> Tensor:
        y = self._product(x)
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> Tensor:
        """The equivalent dense weight A · core · B (d_out, d_in)."""
        reference = self.values if self.sparse else self.weight
        return self._product(torch.eye(self.in_features, dtype=reference.dtype, device=reference.device)).T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block_size={self.block_size}, bias={self.bias is not None}"
