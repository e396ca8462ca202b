"""Calibration statistics of linear-layer inputs, collected with forward hooks."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from armor.methods.base import LayerStats


class NonFiniteStatsError(ValueError):
    """Calibration statistics of a layer hold NaN or Inf."""


class StatsCollector:
    """Accumulate LayerStats for named linear layers while the block runs forward."""

    def __init__(self, linears: dict[str, nn.Linear], hessian: bool) -> None:
        self._sum_sq: dict[str, Tensor] = {}
        self._gram: dict[str, Tensor] = {}
        self._n: dict[str, int] = {}
        self._hessian = hessian
        self._handles = [lin.register_forward_hook(self._hook(name)) for name, lin in linears.items()]

    def _hook(self, name: str) -> Callable[[nn.Linear, tuple, Tensor], None]:
        """A forward hook adding one linear's inputs to its statistics."""

        def accumulate(module: nn.Linear, args: tuple, output: Tensor) -> None:
            """Add this batch's x² sums (and XᵀX where kept) and token count."""
            x = args[0].detach().reshape(-1, module.in_features).float()  # (tokens, d_in)
            if name not in self._n:
                self._n[name] = 0
                self._sum_sq[name] = torch.zeros(module.in_features, device=x.device)
                if self._hessian:
                    self._gram[name] = torch.zeros(module.in_features, module.in_features, device=x.device)
            self._n[name] += x.shape[0]
            self._sum_sq[name] += x.square().sum(0)
            if self._hessian:
                self._gram[name].addmm_(x.T, x)

        return accumulate

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> "StatsCollector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self, prefix: str = "") -> dict[str, LayerStats]:
        """The statistics per layer; raises NonFiniteStatsError naming a layer with NaN/Inf."""
        out = {}
        for name, n in self._n.items():
            h = self._sum_sq[name] / n
            gram = self._gram[name] / n if self._hessian else None
            if not torch.isfinite(h).all() or (gram is not None and not torch.isfinite(gram).all()):
                raise NonFiniteStatsError(f"calibration statistics of layer {prefix}{name} contain NaN or Inf")
            out[name] = LayerStats(h=h, n=n, hessian=gram)
        return out
