"""Per-layer helpers for batches of layers, and steps that must not raise a layer's loss: run one, and restore every
layer whose loss rose or that is inactive."""

from collections.abc import Callable

import torch
from torch import Tensor

from armor.optimizer.problem import Problem


def per_layer(x: Tensor, like: Tensor) -> Tensor:
    """A per-layer vector (L,) shaped to broadcast against a batched tensor (L, ...); floats take its dtype."""
    return (x.to(like.dtype) if x.is_floating_point() else x).view(-1, *([1] * (like.dim() - 1)))


def where_layers(select: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """x for the selected layers (bool (L,)), y elsewhere."""
    return torch.where(per_layer(select, x), x, y)


def guarded(prob: Problem, active: Tensor, step: Callable[[Problem], None]) -> None:
    """Run a step that should not raise the loss; restore every layer that is inactive or whose loss rose (by rounding)."""
    before = {k: v.clone() for k, v in prob.params().items()}
    before_mask, start = prob.mask.clone(), prob.loss
    step(prob)
    restore = ~active | (prob.loss > start)
    if restore.any():
        for name, value in prob.params().items():
            value.copy_(where_layers(restore, before[name], value))
        prob.mask.copy_(where_layers(restore, before_mask, prob.mask))
        prob.refresh()
