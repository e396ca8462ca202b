"""ARMOR as a pruning method: the linears of one decoder block, same-shape layers optimised as one batch."""

import logging
from typing import Any

import torch
from torch import Tensor

from armor.methods.base import LayerResult, LayerStats
from armor.optimizer.bcd import Options, optimize, reads_covariance

log = logging.getLogger(__name__)


def needs_hessian(options: dict[str, Any]) -> bool:
    """Whether ARMOR with these options reads XᵀX/n: the block-covariance proxy and the refit do."""
    return reads_covariance(Options(**{key: options[key] for key in ("proxy", "refit_steps") if key in options}))


def covariance_of(stats: LayerStats, name: str) -> Tensor:
    """XᵀX/n of one layer; ValueError naming the layer where the calibration pass did not record it."""
    if stats.hessian is None:
        raise ValueError(f"{name}: proxy block_covariance and the refit need XᵀX/n, and the calibration statistics hold only h")
    return stats.hessian


def prune_block(weights: dict[str, Tensor], stats: dict[str, LayerStats], options: dict[str, Any]) -> dict[str, LayerResult]:
    """ARMOR on the named linears of one block; extras hold core, A, B, norms, trace and snapshots per layer."""
    opts = Options.from_dict(options)
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, w in weights.items():
        by_shape.setdefault(tuple(w.shape), []).append(name)
    out = {}
    for shape, names in by_shape.items():
        covariance = torch.stack([covariance_of(stats[n], n) for n in names]) if reads_covariance(opts) else None
        outcome = optimize(torch.stack([weights[n] for n in names]), torch.stack([stats[n].h for n in names]), opts, covariance)
        for i, name in enumerate(names):
            extras = outcome.factors[i] | {
                "trace": outcome.trace[:, i].contiguous(), "trace_iterations": torch.tensor(outcome.trace_at),
            }
            info = {
                "iterations": int(outcome.iterations[i]), "guard_rejected": int(outcome.guard.rejected[i]),
                "guard_skipped": int(outcome.guard.skipped[i]),
                **{f"{part}_seconds": seconds / len(names) for part, seconds in outcome.seconds.items()},  # the batch's, shared
                **({} if outcome.refit is None else {"refit_loss_start": float(outcome.refit[0, i]), "refit_loss_end": float(outcome.refit[1, i])}),
            }
            out[name] = LayerResult(outcome.weights[i], extras, info)
        log.info(
            "armor %s (%s, %d layers): loss %s -> %s in %d iterations%s%s",
            "x".join(map(str, shape)), opts.solver, len(names),
            " ".join(f"{x:.4f}" for x in outcome.trace[0].tolist()), " ".join(f"{x:.4f}" for x in outcome.trace[-1].tolist()),
            outcome.trace_at[-1],
            f"; guard rejected {outcome.guard.rejected.tolist()}, skipped {outcome.guard.skipped.tolist()}" if opts.guard else "",
            "" if outcome.refit is None else "; refit on XᵀX/n: " + " ".join(f"{a:.4f} -> {b:.4f}" for a, b in outcome.refit.T.tolist()),
        )
    return out
