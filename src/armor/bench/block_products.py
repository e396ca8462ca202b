"""Benchmark: ArmorLinear's block-diagonal product x · Mᵀ as one batched matmul (bmm, the module's) against the
einsum it replaced, at the Llama widths, interleaved round by round.

Run `python -m armor.bench.block_products [--out CSV]`.
"""

import argparse
import statistics
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from armor import logs
from armor.inference.armor_linear import apply_blocks
from armor.inference.speed import environment, interleaved
from armor.pipeline.models import dtype_name
from armor.reporting.tables import write_csv

WIDTHS = [4096, 11008, 14336]  # Llama-2-7B / Llama-3-8B hidden and MLP widths
TOKENS = [16, 256, 2048]
BLOCK_SIZES = [32, 64, 128]


def apply_blocks_einsum(x: torch.Tensor, blocks: torch.Tensor, d: int) -> torch.Tensor:
    """The einsum formulation ArmorLinear used before: x · Mᵀ over padded (..., n, b) views."""
    n, b, _ = blocks.shape
    padded = F.pad(x, (0, n * b - d)).unflatten(-1, (n, b))
    return torch.einsum("...nk,njk->...nj", padded, blocks).flatten(-2)[..., :d]


def main() -> None:
    """Time both formulations per width, token count and block size; print and write CSV."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/block_products.csv"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtype", default=None, help="float16/bfloat16 on a GPU; float32 on the CPU")
    args = parser.parse_args()
    logs.setup()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    rows = []
    for d in WIDTHS:
        for tokens in TOKENS:
            x = torch.randn(tokens, d, device=device, dtype=dtype)
            for b in BLOCK_SIZES:
                blocks = torch.randn(-(-d // b), b, b, device=device, dtype=dtype) / b
                assert torch.allclose(apply_blocks(x, blocks, d), apply_blocks_einsum(x, blocks, d), rtol=1e-3, atol=1e-3)
                times = interleaved({"bmm": (apply_blocks, lambda: (x, blocks, d)), "einsum": (apply_blocks_einsum, lambda: (x, blocks, d))}, device, args.rounds)
                row = {"d": d, "tokens": tokens, "block_size": b, "dtype": dtype_name(dtype), **environment(device)}
                for name, seconds in times.items():
                    row |= {f"{name}_ms": statistics.median(seconds) * 1000, f"{name}_ms_min": min(seconds) * 1000, f"{name}_ms_max": max(seconds) * 1000}
                row["bmm_speedup"] = statistics.median(e / m for e, m in zip(times["einsum"], times["bmm"]))
                rows.append(row)
                print(f"d={d:6} tokens={tokens:5} b={b:4}: bmm {row['bmm_ms']:8.3f} ms, einsum {row['einsum_ms']:8.3f} ms, "
                      f"bmm {row['bmm_speedup']:.2f}x", flush=True)
    write_csv(pd.DataFrame(rows), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
