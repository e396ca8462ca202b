"""ARMOR's block coordinate descent: per iteration the solver's step and exact sparse-core steps, to convergence."""

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from armor.config import SCHEMA, check_options
from armor.optimizer.adam import GuardCounts, LayerAdam, adam_step
from armor.optimizer.exact import exact_step
from armor.optimizer.gauss_newton import Damping, gauss_newton_step
from armor.optimizer.problem import Problem
from armor.optimizer.refit import refit_core
from armor.optimizer.sweep import Extrapolation, sweep_step

log = logging.getLogger(__name__)

DEFAULT_SPARSE_STEPS = {"adam": 1, "exact": 16, "sweep": 0, "gauss_newton": 0}  # a sweep already re-solves every group
DEFAULT_CG_STEPS = {"adam": 0, "exact": 1, "sweep": 0, "gauss_newton": 20}
RUN_OPTIONS = {  # what a run adds to the armor section: one of block_sizes, and the calibration seed
    "block_size": SCHEMA["properties"]["block_sizes"]["items"],
    "seed": SCHEMA["properties"]["calibration"]["properties"]["seeds"]["items"],
}


@dataclass
class Options:
    """ARMOR's settings: the config's `armor` section plus the block size and the seed."""

    block_size: int = 128
    iterations: int = 20000
    solver: str = "adam"  # adam: the paper's; ours: exact, sweep (closed-form A, B and CG or a sweep of every group), gauss_newton
    lr: float = 1e-4
    cg_steps: int | None = None  # CG steps per iteration; None: 1 for exact, 20 for gauss_newton
    sweep_every: int = 1  # gauss_newton: a sweep over every group after every this many steps
    proxy: str = "diagonal"  # the layer-wise loss: diagonal (NoWag's, the paper's) or block_covariance (XᵀX/n within B's blocks)
    refit_steps: int = 0  # CG steps of a final refit of the kept core values on the whole XᵀX/n (refit.py); 0: none
    core_preconditioner: str = "auto"  # gauss_newton: CG's preconditioner on the core: diagonal, row (exact per row's kept
    # values) or auto (the diagonal until a layer's CG stalls, then row, for column units up to 64)
    sparse_steps: int | None = None  # sparse-core steps per iteration; None: 1 for adam (the paper's), 16 for exact, 0 for sweep and gauss_newton
    selection: str = "gradient_random"
    rtol: float = 1e-6
    atol: float = 1e-8
    patience: int = 100
    guard: bool = False
    guard_retries: int = 4
    trace_every: int = 100
    snapshots: tuple[int, ...] = ()
    seed: int = 0

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "Options":
        """Options from a mapping; unknown keys are an error naming the known ones."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown armor option(s) {unknown}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**options)

    def __post_init__(self) -> None:
        """Check every setting against the config schema's armor section (ValueError naming the option)."""
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items() if v is not None}
        check_options(settings, "armor", RUN_OPTIONS)
        self.snapshots = tuple(self.snapshots)
        if self.sparse_steps is None:
            self.sparse_steps = DEFAULT_SPARSE_STEPS[self.solver]
        if self.cg_steps is None:
            self.cg_steps = DEFAULT_CG_STEPS[self.solver]


@dataclass
class Outcome:
    """What optimising L same-shape layers gives."""

    weights: Tensor  # (L, d_out, d_in) denormalised A·(W'⊙M)·B, in the input dtype
    factors: list[dict[str, Tensor]]  # per layer: core, A, B, r_out, r_in (+ snapshot_<it>)
    trace: Tensor  # (T, L) proxy loss at each traced iteration
    trace_at: list[int]
    guard: GuardCounts
    iterations: Tensor  # (L,) iterations each layer ran before it converged or the budget ended
    seconds: dict[str, float]  # wall time of the batch's parts: "start" (normalising, the NoWag-P mask), "solver", "refit"
    refit: Tensor | None = None  # (2, L) the loss on the whole XᵀX/n before and after the refit, where one ran


SolverState = LayerAdam | Extrapolation | Damping | None


def solver_state(prob: Problem, opts: Options) -> SolverState:
    """What the solver carries between iterations: Adam's moments, the sweep's extrapolation, the damping, or nothing."""
    if opts.solver == "adam":
        return LayerAdam(prob.params(), opts.lr)
    if opts.solver == "gauss_newton":
        return Damping.start(prob, opts.core_preconditioner)
    return Extrapolation.start(prob) if opts.solver == "sweep" else None


def iterate(prob: Problem, opts: Options, active: Tensor, state: SolverState, counts: GuardCounts) -> None:
    """One iteration: the solver's step, then `sparse_steps` sparse-core steps, their groups drawn from the gradient
    at the point the solver's step reached."""
    if isinstance(state, LayerAdam):
        adam_step(prob, state, active, opts.guard, opts.guard_retries, counts)
    elif isinstance(state, Extrapolation):
        sweep_step(prob, active, state)
    elif isinstance(state, Damping):
        gauss_newton_step(prob, active, state, opts.cg_steps, opts.sweep_every)
    else:
        exact_step(prob, opts.cg_steps, active)
    for choice in prob.select(prob.core_gradient(), opts.selection, opts.sparse_steps) if opts.sparse_steps else ():
        prob.sparse_step(choice, active)


def reads_covariance(opts: Options) -> bool:
    """Whether these settings read XᵀX/n: the block-covariance proxy and the refit do."""
    return opts.proxy == "block_covariance" or opts.refit_steps > 0


def optimize(weights: Tensor, h: Tensor, opts: Options, covariance: Tensor | None = None) -> Outcome:
    """Run ARMOR on same-shape layers (L, d_out, d_in) with activation weights h (L, d_in), from NoWag-P; the
    block-covariance proxy and the refit read XᵀX/n, covariance (L, d_in, d_in)."""
    if reads_covariance(opts) and covariance is None:
        raise ValueError(f"proxy {opts.proxy!r} with refit_steps {opts.refit_steps} needs XᵀX/n (covariance, (L, d_in, d_in)); none was given")
    if not reads_covariance(opts) and covariance is not None:
        raise ValueError("proxy 'diagonal' without a refit reads no covariance; set proxy: block_covariance or refit_steps > 0 to use XᵀX/n")
    begin = time.perf_counter()
    prob = Problem(weights, h, opts.block_size, opts.seed, covariance if opts.proxy == "block_covariance" else None)
    started = time.perf_counter()
    L = prob.layers
    state = solver_state(prob, opts)
    active = torch.ones(L, dtype=torch.bool, device=weights.device)
    counts = GuardCounts(torch.zeros(L, dtype=torch.long, device=weights.device), torch.zeros(L, dtype=torch.long, device=weights.device))
    ran = torch.zeros(L, dtype=torch.long, device=weights.device)
    best, stall = prob.loss.clone(), torch.zeros_like(ran)
    trace, trace_at = [prob.loss.clone()], [0]
    snapshots: dict[int, Tensor] = {0: prob.snapshot()} if 0 in opts.snapshots else {}
    it = 0
    for it in range(1, opts.iterations + 1):
        iterate(prob, opts, active, state, counts)
        ran += active
        improved = prob.loss < best - torch.maximum(torch.full_like(best, opts.atol), opts.rtol * best.abs())
        best = torch.where(improved, prob.loss, best)
        stall = torch.where(improved, 0, stall + 1)
        active = active & (stall < opts.patience)
        if it % opts.trace_every == 0:
            trace.append(prob.loss.clone())
            trace_at.append(it)
        if it in opts.snapshots:
            snapshots[it] = prob.snapshot()
        if not active.any():
            break
    if trace_at[-1] != it:
        trace.append(prob.loss.clone())
        trace_at.append(it)
    solved = time.perf_counter()
    seconds = {"start": started - begin, "solver": solved - started}
    refit = None
    if opts.refit_steps:
        refit = torch.stack(refit_core(prob, covariance, opts.refit_steps))
        seconds["refit"] = time.perf_counter() - solved
    factors = prob.factors()
    for i, layer in enumerate(factors):
        layer.update({f"snapshot_{k}": v[i].to(weights.dtype) for k, v in snapshots.items()})
    return Outcome(prob.snapshot().to(weights.dtype), factors, torch.stack(trace), trace_at, counts, ran, seconds, refit)
