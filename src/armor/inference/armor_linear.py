"""A 2:4 linear layer with optional block-diagonal wrappers: y = ((x · Bᵀ) · Wcoreᵀ) · Aᵀ + bias.

Self-contained (torch only): armor-repro copies this file into every packed model folder, where the folder's
modelling code imports it, so the folder loads with plain transformers on a machine without armor-repro.

On disk the core is its kept values (d_out, d_in/2) plus one 4-bit pattern id per group of 4 inputs, two per byte
(d_out, d_in/8); the wrappers are blocks (n, b, b) with the NoWag norms folded in and zero-padded last blocks.
At the first forward (and again after a move to another device or dtype) the core is decompressed once: to PyTorch's
semi-structured 2:4 layout on a CUDA GPU with compute capability >= 8.0 in fp16/bf16, where the layer then runs
three products (B, the 2:4 core, A). Elsewhere no 2:4 kernel runs, so a layer with wrappers multiplies A·core·B out
once and runs one dense matmul, as fast as the dense model; `fold=False` keeps the three products instead.
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
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None, fold: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.block_size, self.sparse = in_features, out_features, block_size, sparse
        self.fold = fold  # multiply A·core·B out where the core would run dense (no 2:4 kernel): one matmul, not three
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
        self._matrix: Tensor | None = None  # what the matmul uses, built at the first forward (see `kernel`)
        self._kernel = ""
        self._built_for: tuple[torch.device, torch.dtype] | None = None

    @classmethod
    def from_core(cls, core: Tensor, a: Tensor | None = None, b: Tensor | None = None, bias: Tensor | None = None, sparse: bool = True,
                  fold: bool = True) -> "ArmorLinear":
        """A layer holding a dense 2:4 core (d_out, d_in), wrapper blocks (n, b, b) and a bias."""
        layer = cls(core.shape[1], core.shape[0], 0 if a is None else a.shape[-1], bias is not None, sparse, core.dtype, core.device, fold)
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

    def _dense_core(self) -> Tensor:
        """The 2:4 core as a dense masked weight (d_out, d_in)."""
        return decompress_24(self.values, self.patterns, self.in_features) if self.sparse else self.weight

    def _multiply_out(self, core: Tensor) -> Tensor:
        """A · core · B (d_out, d_in) for a dense core, computed in at least float32 and returned in the core's dtype."""
        work = torch.float32 if core.dtype in (torch.float16, torch.bfloat16) else core.dtype
        cb = apply_blocks(core.to(work), self.B.transpose(1, 2).to(work), self.in_features)  # core · B
        return apply_blocks(cb.T, self.A.to(work), self.out_features).T.contiguous().to(core.dtype)  # (Bᵀ·coreᵀ·Aᵀ)ᵀ

    def _build(self) -> tuple[Tensor, str]:
        """The matrix for the matmul and its kernel (see `kernel`)."""
        core = self._dense_core()
        if self.sparse and semi_structured_supported(core.device, core.dtype):
            from torch.sparse import to_sparse_semi_structured

            try:
                return to_sparse_semi_structured(core), "semi-structured"
            except (RuntimeError, ValueError) as err:  # a shape the kernels do not take
                log.warning("keeping a dense core for a %dx%d layer: %s", self.out_features, self.in_features, err)
        if self.block_size and self.fold:
            return self._multiply_out(core), "folded"
        return core, "dense"

    def matrix(self) -> Tensor:
        """What the matmul uses, built once per device and dtype: the 2:4 core, or A·core·B where folded."""
        source = self.values if self.sparse else self.weight
        if self._built_for != (source.device, source.dtype):
            self._matrix, self._kernel = self._build()
            self._built_for = (source.device, source.dtype)
        return self._matrix

    def kernel(self) -> str:
        """How the layer runs: `semi-structured` (B, the 2:4 kernels, A), `folded` (one dense A·core·B) or `dense`
        (the dense masked core, with A and B as batched products where the layer has them)."""
        self.matrix()
        return self._kernel

    def forward(self, x: Tensor) -> Tensor:
        matrix = self.matrix()
        wrapped = bool(self.block_size) and self._kernel != "folded"
        x = apply_blocks(x, self.B, self.in_features) if wrapped else x
        if self._kernel == "semi-structured":
            x = x.contiguous()  # the 2:4 kernels view the input as 2-D; B's product over a ragged last block is a strided slice
        y = F.linear(x, matrix)
        if wrapped:
            y = apply_blocks(y, self.A, self.out_features)
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> Tensor:
        """The equivalent dense weight A · core · B (d_out, d_in)."""
        core = self._dense_core()
        return self._multiply_out(core) if self.block_size else core

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, block_size={self.block_size}, "
                f"bias={self.bias is not None}, fold={self.fold}")
