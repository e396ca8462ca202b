"""2:4 semi-structured masks: selection and checks along the input dimension."""

import torch
from torch import Tensor

GROUP = 4
KEEP = 2
PATTERNS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])  # the 6 ways to keep 2 of 4


def _groups(x: Tensor) -> Tensor:
    """View (d_out, d_in) as (d_out, d_in / 4, 4); d_in must be a multiple of 4."""
    if x.shape[-1] % GROUP:
        raise ValueError(f"2:4 sparsity needs d_in divisible by {GROUP}, got shape {tuple(x.shape)}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // GROUP, GROUP)


def mask_24(scores: Tensor) -> Tensor:
    """Boolean mask keeping the 2 highest scores in every group of 4 consecutive inputs."""
    groups = _groups(scores)
    keep = groups.topk(KEEP, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(scores.shape)


def is_24(weight: Tensor) -> bool:
    """True when every group of 4 consecutive inputs holds at most 2 non-zeros."""
    return bool(((_groups(weight) != 0).sum(-1) <= KEEP).all())


def zero_count(weight: Tensor) -> int:
    """Number of exactly-zero entries."""
    return int((weight == 0).sum())
