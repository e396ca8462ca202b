"""Benchmark timing helpers: what is timed, in which order, and how rounds become rows."""

import time
from collections.abc import Callable

import torch

from armor.inference.speed import interleaved, ratio, ratio_spread, spread, timing_dtype


def test_rounds_interleave_every_case_and_setup_is_not_timed():
    calls = []

    def setup(name: str) -> Callable[[], tuple[str]]:
        """An untimed setup that records its call."""

        def run() -> tuple[str]:
            """Sleep, as a prefill would, and record the call."""
            time.sleep(0.05)  # e.g. a prefill that builds the KV cache
            calls.append(f"setup {name}")
            return (name,)

        return run

    def step(name: str) -> None:
        """A timed step that records its call."""
        calls.append(f"step {name}")

    times = interleaved({"a": (step, setup("a")), "b": (step, setup("b"))}, torch.device("cpu"), rounds=2)
    assert calls == ["setup a", "step a", "setup b", "step b"] * 3  # a warm-up round, then 2 timed rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}
    assert max(times["a"] + times["b"]) < 0.01


def test_spread_and_ratio_use_medians_over_rounds():
    assert spread(100.0, [1.0, 2.0, 4.0], "tok") == {"tok": 50.0, "tok_min": 25.0, "tok_max": 100.0}
    assert ratio([2.0, 2.0, 8.0], [1.0, 4.0, 2.0]) == 2.0  # per-round ratios 2, 0.5, 4
    assert ratio_spread([2.0, 2.0, 8.0], [1.0, 4.0, 2.0], "r") == {"r": 2.0, "r_min": 0.5, "r_max": 4.0}


def test_timing_dtype_is_the_configured_one_on_a_gpu_and_the_cpu_default_elsewhere():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert timing_dtype("float16", cuda) is torch.float16
    assert timing_dtype("auto", cuda) == "auto"
    assert timing_dtype("float16", cpu) == "auto"
    assert timing_dtype("bfloat16", cpu, cpu="float32") is torch.float32
