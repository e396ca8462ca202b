"""Bootstrap intervals of perplexity over evaluation windows, and paired comparisons of two runs on the same windows.

Windows are resampled with replacement; a run's perplexity on a resample is exp(Σ NLL / Σ tokens) of the drawn
windows. Two runs scored on the same windows are compared on the same resamples, so the interval of their difference
reflects how consistently one beats the other window by window, not only how far apart their totals are.
"""

import torch
from torch import Tensor

DRAWS, LEVEL, SEED = 2000, 0.95, 0


def resamples(windows: int, draws: int = DRAWS, seed: int = SEED) -> Tensor:
    """Window indices of `draws` bootstrap resamples (draws, windows), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(windows, (draws, windows), generator=generator)


def resampled_ppl(nll: Tensor, tokens_per_window: int, draws: Tensor) -> Tensor:
    """Perplexity on each resample (draws,) from the windows' summed NLLs (n,)."""
    return torch.exp(nll.double()[draws].sum(1) / (draws.shape[1] * tokens_per_window))


def interval(values: Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values."""
    tail = (1 - level) / 2
    low, high = torch.quantile(values.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)
