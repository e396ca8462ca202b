"""Inference speed and memory: whole packed models (prefill/decode) and single layers."""

import logging
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from armor.inference.armor_linear import ArmorLinear
from armor.inference.packed import load_pruned, packed_bytes
from armor.optimizer import blockdiag as bd
from armor.sparsity import mask_24

log = logging.getLogger(__name__)

# Linear shapes (d_out, d_in) of one decoder block, for the layer-level benchmark.
LAYER_SHAPES = {
    "llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "llama3-8b": [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)],
}


def environment(device: torch.device) -> dict[str, str]:
    """Device and library versions, recorded in every benchmark row."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} cpu x{torch.get_num_threads()}"
    return {"device": device.type, "device_name": name, "torch": torch.__version__, "transformers": transformers.__version__}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[..., Any], device: torch.device, repeats: int, setup: Callable[[], tuple[Any, ...]] = tuple) -> float:
    """Median seconds of fn(*setup()) after one warm-up call; setup runs untimed before every call."""
    fn(*setup())
    times = []
    for _ in range(repeats):
        args = setup()
        synchronize(device)
        start = time.perf_counter()
        fn(*args)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident set on the CPU, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_speed(
    packed: Path, batch_sizes: list[int], prompt_len: int, decode_tokens: int, device: torch.device, repeats: int = 3
) -> list[dict[str, Any]]:
    """Prefill and greedy-decode throughput of a packed model at each batch size."""
    model = load_pruned(packed, device=device)
    vocab = model.config.vocab_size
    rows = []
    for batch in batch_sizes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        prompt = torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)

        def prefill() -> Any:
            with torch.inference_mode():
                return model(prompt, use_cache=True)

        def start_decode() -> tuple[Any, torch.Tensor]:
            out = prefill()
            return out.past_key_values, out.logits[:, -1:].argmax(-1)

        def decode(cache: Any, token: torch.Tensor) -> None:
            with torch.inference_mode():
                for _ in range(decode_tokens):
                    out = model(token, past_key_values=cache, use_cache=True)
                    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

        t_prefill = timed(prefill, device, repeats)
        t_decode = timed(decode, device, repeats, setup=start_decode)
        rows.append(
            {
                "batch_size": batch, "prompt_len": prompt_len, "decode_tokens": decode_tokens,
                "prefill_tokens_per_s": batch * prompt_len / t_prefill,
                "decode_tokens_per_s": batch * decode_tokens / t_decode,
                "peak_memory_mb": peak_memory_mb(device), "bytes_on_disk": packed_bytes(packed), **environment(device),
            }
        )
        log.info("batch %d: prefill %.0f tok/s, decode %.1f tok/s", batch, rows[-1]["prefill_tokens_per_s"], rows[-1]["decode_tokens_per_s"])
    return rows


def _random_blocks(lay: bd.Layout, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (bd.identity(lay, dtype=dtype, device=device)[0] + 0.01 * torch.randn(lay.n_blocks, lay.b, lay.b, device=device).to(dtype))


def layer_speed(
    shapes: dict[str, list[tuple[int, int]]], block_sizes: list[int], tokens: int, dtype: torch.dtype, device: torch.device, repeats: int = 10
) -> list[dict[str, Any]]:
    """One linear per shape: dense vs 2:4 vs ARMOR at each block size, as `tokens` rows of input."""
    rows = []
    for model, layer_shapes in shapes.items():
        for d_out, d_in in layer_shapes:
            weight = torch.randn(d_out, d_in, device=device).to(dtype)
            core = weight * mask_24(weight.abs())
            x = torch.randn(tokens, d_in, device=device).to(dtype)
            variants = {"dense": ArmorLinear(weight, is_24=False), "2:4": ArmorLinear(core.clone())}
            for b in block_sizes:
                a = _random_blocks(bd.layout(d_out, b), dtype, device)
                bb = _random_blocks(bd.layout(d_in, b, 4), dtype, device)
                variants[f"armor_b{b}"] = ArmorLinear(core.clone(), a, bb)
            dense_s = None
            for name, layer in variants.items():
                kernel = "semi-structured" if layer.to_sparse() else "dense"
                with torch.inference_mode():
                    seconds = timed(lambda: layer(x), device, repeats)  # noqa: B023
                dense_s = dense_s or seconds
                rows.append(
                    {
                        "model": model, "d_out": d_out, "d_in": d_in, "variant": name, "kernel": kernel,
                        "dtype": str(dtype).removeprefix("torch."), "tokens": tokens, "ms": seconds * 1000,
                        "speedup_vs_dense": dense_s / seconds, **environment(device),
                    }
                )
                log.info("%s %dx%d %s (%s): %.3f ms, %.2fx", model, d_out, d_in, name, kernel, seconds * 1000, dense_s / seconds)
    return rows
