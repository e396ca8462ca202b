"""Benchmark timing helpers: what is timed and what is not."""

import time

import torch

from armor.inference.speed import timed


def test_setup_runs_before_every_call_and_is_not_timed():
    calls = []

    def setup() -> tuple[int]:
        time.sleep(0.05)  # e.g. a prefill that builds the KV cache
        calls.append("setup")
        return (len(calls),)

    def step(n: int) -> None:
        calls.append(f"step {n}")

    seconds = timed(step, torch.device("cpu"), repeats=3, setup=setup)
    assert calls == ["setup", "step 1", "setup", "step 3", "setup", "step 5", "setup", "step 7"]  # warm-up + 3 repeats
    assert seconds < 0.01
