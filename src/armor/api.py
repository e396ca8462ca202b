"""Prune one linear layer without the workflow: `armor.prune_layer(weight, h, method, **options)`."""

from typing import Any

import torch
from torch import Tensor

from armor.methods import get_method
from armor.methods.base import LayerResult, LayerStats

SOLVER_DTYPES = (torch.float32, torch.float64)


def prune_layer(weight: Tensor, h: Tensor, method: str, *, hessian: Tensor | None = None, **options: Any) -> LayerResult:
    """Prune a weight (d_out, d_in) to 2:4 given h (d_in,), the mean of x² per input feature over calibration tokens.

    `options` are the config's `armor:` keys plus `block_size` and `seed` (ARMOR only); SparseGPT, and ARMOR with
    `proxy="block_covariance"` or `refit_steps` > 0, also need `hessian`, XᵀX/n (d_in, d_in). Half-precision inputs
    are solved in float32; `.weight` comes back in the input's dtype, ARMOR's extras (core, A, B, r_in, r_out, trace)
    in the solver's.
    """
    spec = get_method(method)
    if weight.dim() != 2 or h.shape != (weight.shape[1],):
        raise ValueError(f"expected weight (d_out, d_in) and h (d_in,), got {tuple(weight.shape)} and {tuple(h.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight has NaN or infinite entries")
    if not bool((torch.isfinite(h) & (h >= 0)).all()):
        raise ValueError("h must be finite and >= 0 (the mean of x² per input feature)")
    if spec.prune_block is None:
        return LayerResult(weight.clone())
    if spec.needs_hessian(options) and hessian is None:
        given = f" with {options}" if options else ""
        raise ValueError(f"method {method!r}{given} needs hessian=XᵀX/n, a ({weight.shape[1]}, {weight.shape[1]}) tensor")
    if options and method != "armor":
        raise ValueError(f"method {method!r} takes no options, got {sorted(options)}")
    dtype = weight.dtype if weight.dtype in SOLVER_DTYPES else torch.float32
    stats = LayerStats(h=h.to(dtype), n=1, hessian=None if hessian is None else hessian.to(dtype))
    result = spec.prune_block({"layer": weight.to(dtype)}, {"layer": stats}, options)["layer"]
    result.weight = result.weight.to(weight.dtype)
    return result
