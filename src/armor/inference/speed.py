"""Inference speed and memory: whole packed models (prefill/decode) and single layers.

Every timing is interleaved: each round times every configuration once, in turn, so a busy machine slows all of
them alike; rows report the median over rounds, the fastest and slowest round, and the median of the per-round
ratio to the dense reference.
"""

import logging
import platform
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from armor.inference.armor_linear import ArmorLinear
from armor.inference.packed import load_pruned, packed_bytes
from armor.optimizer import blockdiag as bd
from armor.pipeline.models import DTYPES, dtype_name
from armor.software import software
from armor.sparsity import mask_24

log = logging.getLogger(__name__)

# Linear shapes (d_out, d_in) of one decoder block, for the layer-level benchmark.
LAYER_SHAPES = {
    "llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "llama3-8b": [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)],
}


def timing_dtype(name: str, device: torch.device, cpu: str = "auto") -> torch.dtype | str:
    """The dtype to time in: `name` (a DTYPES key, or `auto` for a model's own) on a GPU, `cpu` on the CPU, where
    fp16 matmuls are no fast path."""
    chosen = name if device.type == "cuda" else cpu
    return chosen if chosen == "auto" else DTYPES[chosen]


def visible_gpus(device: torch.device) -> range:
    """Indices of the GPUs a CUDA run may spread over (every visible one); none on the CPU."""
    return range(torch.cuda.device_count() if device.type == "cuda" else 0)


def sparse_backend(device: torch.device) -> tuple[str, str]:
    """Which library runs PyTorch's 2:4 kernels here (cusparselt, cutlass or none) and, for none, why not."""
    if device.type != "cuda":
        return "none", f"no 2:4 kernels on {device.type}"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "none", "compute capability below 8.0"
    from torch.sparse import SparseSemiStructuredTensor

    if SparseSemiStructuredTensor._FORCE_CUTLASS:
        return "cutlass", ""
    if torch.backends.cusparselt.is_available():
        return "cusparselt", ""
    return "none", "cuSPARSELt unavailable and CUTLASS not forced: 2:4 layers run dense"


def environment(device: torch.device) -> dict[str, str | int]:
    """Device, GPU count, 2:4 backend, the image (or host) and library versions, recorded in every benchmark row."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} cpu x{torch.get_num_threads()}"
    backend, reason = sparse_backend(device)
    return {"device": device.type, "device_name": name, "gpus": len(visible_gpus(device)), "sparse_backend": backend,
            "sparse_backend_reason": reason, **software()}


def synchronize(device: torch.device) -> None:
    """Wait for queued work on every visible GPU (a model may be spread over several), so timings cover it; nothing on the CPU."""
    for index in visible_gpus(device):
        torch.cuda.synchronize(index)


Timed = tuple[Callable[..., Any], Callable[[], tuple[Any, ...]]]  # (the call to time, an untimed setup giving its arguments)


def interleaved(cases: dict[str, Timed], device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds of every case in each of `rounds` rounds (after one warm-up round); each round runs every case once."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):
        for name, (fn, setup) in cases.items():
            args = setup()
            synchronize(device)
            start = time.perf_counter()
            fn(*args)
            synchronize(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def spread(work: float, seconds: list[float], prefix: str) -> dict[str, float]:
    """Throughput `work`/s as the median over rounds and its slowest and fastest round."""
    return {prefix: work / statistics.median(seconds), f"{prefix}_min": work / max(seconds), f"{prefix}_max": work / min(seconds)}


def ratio(reference: list[float], seconds: list[float]) -> float:
    """Median over rounds of reference time / time: the speedup measured under the same load."""
    return statistics.median(r / s for r, s in zip(reference, seconds, strict=True))


def ratio_spread(reference: list[float], seconds: list[float], prefix: str) -> dict[str, float]:
    """The per-round speedup over the reference timed in the same rounds: its median, lowest and highest round."""
    per_round = [r / s for r, s in zip(reference, seconds, strict=True)]
    return {prefix: statistics.median(per_round), f"{prefix}_min": min(per_round), f"{prefix}_max": max(per_round)}


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement on every visible GPU; nothing on the CPU (its peak is the process's)."""
    for index in visible_gpus(device):
        torch.cuda.reset_peak_memory_stats(index)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, summed over the visible GPUs, or the process's peak resident set on the CPU, in MB."""
    if device.type == "cuda":
        return sum(torch.cuda.max_memory_allocated(index) for index in visible_gpus(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_cases(model: Any, batch: int, prompt_len: int, decode_tokens: int, device: torch.device) -> tuple[Timed, Timed]:
    """The prefill call and the greedy decode call (its prefill as untimed setup) of a model at one batch size."""
    prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(model.get_input_embeddings().weight.device)  # the first GPU of a model spread over several

    def prefill() -> Any:
        """One forward over the prompt, filling the KV cache."""
        with torch.inference_mode():
            return model(prompt, use_cache=True)

    def start_decode() -> tuple[Any, torch.Tensor]:
        """The cache and first token a decode starts from."""
        out = prefill()
        return out.past_key_values, out.logits[:, -1:].argmax(-1)

    def decode(cache: Any, token: torch.Tensor) -> None:
        """Greedy decoding of `decode_tokens` tokens from a cache."""
        with torch.inference_mode():
            for _ in range(decode_tokens):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

    return (prefill, tuple), (decode, start_decode)


def linear_kernels(model: Any) -> str:
    """How a packed model's pruned linears run (`ArmorLinear.kernel`, joined by + where they differ); `dense` without any."""
    kernels = {module.kernel() for module in model.modules() if type(module).__name__ == "ArmorLinear"}
    return "+".join(sorted(kernels)) or "dense"


def model_speed(
    packed: Path, reference: Path | None, batch_sizes: list[int], prompt_len: int, decode_tokens: int, device: torch.device, rounds: int = 5,
    dtype: torch.dtype | str = "auto",
) -> list[dict[str, Any]]:
    """Prefill and greedy-decode throughput of a packed model at each batch size, interleaved with the dense reference,
    both loaded in `dtype` (`auto`: as saved).

    Peak memory is measured with the packed model alone, before the reference is loaded; without a reference the
    ratios are NaN, and the reference itself is timed once, with ratios of 1.
    """
    model = load_pruned(packed, device=device, dtype=dtype)
    memory = {}
    for batch in batch_sizes:
        reset_peak_memory(device)
        interleaved(dict(zip(("prefill", "decode"), _model_cases(model, batch, prompt_len, decode_tokens, device))), device, 0)
        memory[batch] = peak_memory_mb(device)
    kernel = linear_kernels(model)  # the warm-up built every layer's matrix
    compare = reference is not None and Path(reference).resolve() != Path(packed).resolve()
    dense = load_pruned(reference, device=device, dtype=dtype) if compare else None
    same = float("nan") if reference is None else 1.0  # the ratio of a run that is not compared
    rows = []
    for batch in batch_sizes:
        cases = dict(zip(("prefill", "decode"), _model_cases(model, batch, prompt_len, decode_tokens, device)))
        if compare:
            cases |= dict(zip(("ref_prefill", "ref_decode"), _model_cases(dense, batch, prompt_len, decode_tokens, device)))
        t = interleaved(cases, device, rounds)
        versus = {}
        for part, work in (("prefill", batch * prompt_len), ("decode", batch * decode_tokens)):
            if compare:  # the dense reference's throughput in these rounds, and the per-round ratio with its range
                versus |= {f"dense_{part}_tokens_per_s": work / statistics.median(t[f"ref_{part}"])}
                versus |= ratio_spread(t[f"ref_{part}"], t[part], f"{part}_vs_dense")
            else:  # no reference (NaN), or the reference itself (1)
                versus |= {f"dense_{part}_tokens_per_s": float("nan")} | dict.fromkeys((f"{part}_vs_dense", f"{part}_vs_dense_min", f"{part}_vs_dense_max"), same)
        rows.append({
            "batch_size": batch, "prompt_len": prompt_len, "decode_tokens": decode_tokens, "rounds": rounds,
            **spread(batch * prompt_len, t["prefill"], "prefill_tokens_per_s"),
            **spread(batch * decode_tokens, t["decode"], "decode_tokens_per_s"),
            **versus,
            "dtype": dtype_name(model.dtype), "kernel": kernel, "peak_memory_mb": memory[batch], "bytes_on_disk": packed_bytes(packed), **environment(device),
        })
        log.info("batch %d: prefill %.0f tok/s (%.2fx dense), decode %.1f tok/s (%.2fx dense)", batch, rows[-1]["prefill_tokens_per_s"],
                 rows[-1]["prefill_vs_dense"], rows[-1]["decode_tokens_per_s"], rows[-1]["decode_vs_dense"])
    return rows


def _random_blocks(lay: bd.Layout, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Wrapper blocks (n, b, b) near the identity, as after ARMOR."""
    return (bd.identity(lay, dtype=dtype, device=device)[0] + 0.01 * torch.randn(lay.n_blocks, lay.b, lay.b, device=device).to(dtype))


def layer_variants(d_out: int, d_in: int, block_sizes: list[int], dtype: torch.dtype, device: torch.device) -> dict[str, ArmorLinear]:
    """Dense, plain 2:4 and ARMOR at each block size for one random weight."""
    weight = torch.randn(d_out, d_in, device=device).to(dtype)
    core = weight * mask_24(weight.abs())
    variants = {"dense": ArmorLinear.from_core(weight, sparse=False), "2:4": ArmorLinear.from_core(core)}
    for b in block_sizes:
        variants[f"armor_b{b}"] = ArmorLinear.from_core(core, _random_blocks(bd.layout(d_out, b), dtype, device), _random_blocks(bd.layout(d_in, b, 4), dtype, device))
    return variants


def _forward(layer: ArmorLinear, x: torch.Tensor) -> None:
    """One forward of the layer, without autograd."""
    with torch.inference_mode():
        layer(x)


def layer_speed(
    shapes: dict[str, list[tuple[int, int]]], block_sizes: list[int], tokens: list[int], dtype: torch.dtype, device: torch.device,
    rounds: int = 10,
) -> list[dict[str, Any]]:
    """One linear per shape and number of input rows (tokens): dense vs 2:4 vs ARMOR at each block size, interleaved."""
    rows = []
    for model, layer_shapes in shapes.items():
        for d_out, d_in in layer_shapes:
            variants = layer_variants(d_out, d_in, block_sizes, dtype, device)
            for n in tokens:
                x = torch.randn(n, d_in, device=device).to(dtype)
                times = interleaved({name: (partial(_forward, layer, x), tuple) for name, layer in variants.items()}, device, rounds)
                for name, layer in variants.items():
                    median = statistics.median(times[name])
                    rows.append({
                        "model": model, "d_out": d_out, "d_in": d_in, "variant": name, "kernel": layer.kernel(),
                        "dtype": dtype_name(dtype), "tokens": n, "rounds": rounds, "ms": median * 1000,
                        "ms_min": min(times[name]) * 1000, "ms_max": max(times[name]) * 1000,
                        "speedup_vs_dense": ratio(times["dense"], times[name]), **environment(device),
                    })
                    log.info("%s %dx%d, %d tokens, %s (%s): %.3f ms, %.2fx", model, d_out, d_in, n, name, rows[-1]["kernel"], median * 1000,
                             rows[-1]["speedup_vs_dense"])
    return rows
