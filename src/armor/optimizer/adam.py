"""The paper's continuous step: one Adam step on A, B and the kept core values, per layer, with an optional guard.

Adam is written out here (element-wise tensor ops, layout-independent) rather than taken from torch.optim, so that
each layer has its own step count and moments that a rejected step can restore, and a retry can take a smaller
learning rate for that layer alone. tests/reference_armor.py checks it against torch.optim.Adam over many steps.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from armor.optimizer.monotone import per_layer
from armor.optimizer.problem import Problem

BETAS, EPS = (0.9, 0.999), 1e-8


class LayerAdam:
    """Adam moments and step counts per layer for batched parameters (L, ...)."""

    def __init__(self, params: dict[str, Tensor], lr: float) -> None:
        self.lr = lr
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        layers, device = next(iter(params.values())).shape[0], next(iter(params.values())).device
        self.steps = torch.zeros(layers, dtype=torch.float64, device=device)

    def directions(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """Advance every layer's moments by one step with `grads`; return m̂ / (√v̂ + eps) per parameter."""
        beta1, beta2 = BETAS
        self.steps += 1
        correction1 = 1 - beta1**self.steps  # (L,)
        root_correction2 = (1 - beta2**self.steps).sqrt()
        out = {}
        for name, grad in grads.items():
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / per_layer(root_correction2, v)).add_(EPS)
            out[name] = m / per_layer(correction1, m) / denom
        return out

    def state(self) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """A copy of the moments and step counts."""
        return ({k: v.clone() for k, v in self.exp_avg.items()}, {k: v.clone() for k, v in self.exp_avg_sq.items()}, self.steps.clone())

    def restore(self, saved: tuple[dict[str, Tensor], dict[str, Tensor], Tensor], layers: Tensor) -> None:
        """Put back the saved moments and step counts of the selected layers (bool (L,))."""
        exp_avg, exp_avg_sq, steps = saved
        for name in self.exp_avg:
            self.exp_avg[name][layers] = exp_avg[name][layers]
            self.exp_avg_sq[name][layers] = exp_avg_sq[name][layers]
        self.steps[layers] = steps[layers]


@dataclass
class GuardCounts:
    """Per layer: Adam steps the guard rejected (each retried at half the rate) and steps finally skipped."""

    rejected: Tensor
    skipped: Tensor


def adam_step(prob: Problem, adam: LayerAdam, active: Tensor, guard: bool, retries: int, counts: GuardCounts) -> None:
    """One Adam step on A, B and the kept core values of the active layers, leaving the problem refreshed.

    With `guard`, a layer whose loss rose takes the step again from the same point at half the learning rate, up
    to `retries` times; if it still rose, that layer's parameters, moments and step count are restored.
    """
    grads = prob.gradients()
    grads["core"] = grads["core"] * prob.mask  # only kept values move
    params = prob.params()
    before = {k: v.clone() for k, v in params.items()} if guard else {}
    saved = adam.state() if guard else None
    directions = adam.directions(grads)
    rate = active.to(torch.float64) * adam.lr  # (L,)
    for name, value in params.items():
        value.sub_(directions[name] * per_layer(rate, value))
    prob.core.mul_(prob.mask)
    start = prob.loss
    prob.refresh()
    if not guard:
        return
    rose = active & (prob.loss > start)
    for _ in range(retries):
        if not rose.any():
            break
        counts.rejected += rose
        rate = torch.where(rose, rate / 2, 0.0)
        for name, value in params.items():
            retried = before[name] - directions[name] * per_layer(rate, value)
            value.copy_(torch.where(per_layer(rose, value), retried, value))
        prob.core.mul_(prob.mask)
        prob.refresh()
        rose = rose & (prob.loss > start)
    if rose.any():
        counts.rejected += rose
        counts.skipped += rose
        for name, value in params.items():
            value[rose] = before[name][rose]
        adam.restore(saved, rose)
        prob.refresh()
