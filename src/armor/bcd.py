"""ARMOR: block coordinate descent on A · (W' ⊙ M) · B, batched over layers of one shape."""

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from armor import blockdiag as bd
from armor.layer import LayerResult
from armor.normalize import normalize
from armor.sparse_core import solve_groups
from armor.sparsity import GROUP, mask_24
from armor.stats import LayerStats

log = logging.getLogger(__name__)

SELECTIONS = ("gradient_random", "gradient_greedy", "random")
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
SELECTION_FLOOR = 1e-30  # added to valid candidates so a pair with zero gradient samples uniformly


@dataclass
class Options:
    """ARMOR's settings (the config's `armor` section plus the block size)."""

    block_size: int = 128
    iterations: int = 20000
    lr: float = 1e-4
    selection: str = "gradient_random"
    rtol: float = 1e-6
    atol: float = 1e-8
    patience: int = 100
    guard: bool = True
    trace_every: int = 100
    snapshots: tuple[int, ...] = ()
    seed: int = 0

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "Options":
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        if "snapshots" in known:
            known["snapshots"] = tuple(known["snapshots"])
        opts = cls(**known)
        if opts.selection not in SELECTIONS:
            raise ValueError(f"armor selection must be one of {SELECTIONS}, got {opts.selection!r}")
        return opts


class Problem:
    """L same-shape layers (L, d_out, d_in) optimised together; all state in padded grid form."""

    def __init__(self, weights: Tensor, h: Tensor, opts: Options) -> None:
        self.opts = opts
        L, d_out, d_in = weights.shape
        b = opts.block_size
        self.rows, self.cols = bd.layout(d_out, b), bd.layout(d_in, b, GROUP)
        self.unit = math.lcm(b, GROUP)  # columns solved together in the sparse step
        dev, dt = weights.device, weights.dtype
        w_bar, self.r_in, self.r_out = zip(*(normalize(w) for w in weights))
        w_bar, self.r_in, self.r_out = torch.stack(w_bar), torch.stack(self.r_in), torch.stack(self.r_out)
        mask = mask_24(w_bar.square() * h[:, None, :])  # NoWag-P start

        self.h = torch.nn.functional.pad(h, (0, self.cols.padded - d_in))  # (L, P_in)
        self.h_grid = self.h.reshape(L, 1, 1, self.cols.n_blocks, b)
        self.z = (w_bar.square() * h[:, None, :]).sum((1, 2))  # (L,) loss of the zero matrix
        self.w_bar = self._grid(bd.pad(w_bar, self.rows, self.cols))
        self.mask = self._grid(bd.pad(mask, self.rows, self.cols))
        self.core = self.w_bar * self.mask  # C = W' ⊙ M
        self.a = bd.identity(self.rows, L, dt, dev)
        self.b = bd.identity(self.cols, L, dt, dev)
        self.grad_scale = 2 * self.h_grid / self.z[:, None, None, None, None]  # ∂L/∂W_hat = resid · grad_scale
        self.adam = torch.optim.Adam(list(self.params().values()), lr=opts.lr, betas=BETAS, eps=ADAM_EPS, fused=True)
        self.generator = torch.Generator(device=dev).manual_seed(opts.seed)
        self._refresh()

        n_units = self.cols.padded // self.unit
        per_unit = self.unit // GROUP
        row_ok = torch.arange(self.rows.padded, device=dev).reshape(self.rows.n_blocks, b) < d_out
        group_ok = (torch.arange(self.cols.padded, device=dev).reshape(n_units, per_unit, GROUP)[..., 0]) < d_in
        self.valid = (row_ok[:, None, :, None] & group_ok[None, :, None, :]).reshape(self.rows.n_blocks, n_units, -1).to(dt)

    def _grid(self, x: Tensor) -> Tensor:
        return bd.grid(x, self.rows, self.cols)

    def _units(self, x: Tensor) -> Tensor:
        """Grid (L, n_out, b, n_in, b) viewed as (L, n_out, b, n_units, unit)."""
        return x.reshape(*x.shape[:3], -1, self.unit)

    def params(self) -> dict[str, Tensor]:
        return {"a": self.a, "b": self.b, "core": self.core}

    def _forward(self, a: Tensor, b: Tensor, core: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """C·B, the residual A·C·B − W̄ and the loss per layer."""
        cb = bd.right(core, b)
        resid = bd.left(a, cb) - self.w_bar
        return cb, resid, self._loss(resid)

    def _loss(self, resid: Tensor) -> Tensor:
        """Proxy loss per layer (float64), from the column norms of the residual."""
        col_sq = torch.linalg.vector_norm(resid, dim=(1, 2)).double().square()  # (L, n_in, b)
        return (col_sq * self.h_grid[:, 0, 0]).sum((1, 2)) / self.z

    def _refresh(self) -> None:
        self.cb, self.resid, self.loss = self._forward(self.a, self.b, self.core)

    def gradients(self) -> dict[str, Tensor]:
        """∂L/∂A, ∂L/∂B and ∂L/∂C (C dense: also at pruned positions, for group selection)."""
        d = self.resid * self.grad_scale  # ∂L/∂W_hat
        atd = torch.einsum("lpji,lpjqk->lpiqk", self.a, d)  # Aᵀ D
        return {
            "a": torch.einsum("lpiqk,lpjqk->lpij", d, self.cb),  # D (C B)ᵀ on A's blocks
            "b": torch.einsum("lpiqk,lpiqj->lqkj", self.core, atd),  # Cᵀ Aᵀ D on B's blocks
            "core": torch.einsum("lpiqk,lqjk->lpiqj", atd, self.b),  # Aᵀ D Bᵀ
        }

    def continuous_step(self, grads: dict[str, Tensor], active: Tensor) -> Tensor:
        """One Adam step on A, B and the kept core values; returns which layers accepted it."""
        before = {name: value.clone() for name, value in self.params().items()}
        for name, value in self.params().items():
            value.grad = grads[name] * self.mask if name == "core" else grads[name]
        self.adam.step()
        self.core.mul_(self.mask)
        cb, resid, loss = self._forward(self.a, self.b, self.core)
        accept = active & (loss <= self.loss) if self.opts.guard else active
        for layer in torch.nonzero(~accept).flatten().tolist():  # roll back in place: the optimiser holds these
            for name, value in self.params().items():
                value[layer] = before[name][layer]
            cb[layer], resid[layer], loss[layer] = self.cb[layer], self.resid[layer], self.loss[layer]
        self.cb, self.resid, self.loss = cb, resid, loss
        return accept

    def select(self, grad_core: Tensor) -> Tensor:
        """One candidate group index per (row block, column unit), (L, n_out, n_units)."""
        L = grad_core.shape[0]
        if self.opts.selection == "random":
            weights = self.valid.expand(L, -1, -1, -1)
        else:
            l1 = self._units(grad_core).abs().reshape(*grad_core.shape[:3], -1, self.unit // GROUP, GROUP).sum(-1)
            l1 = l1.permute(0, 1, 3, 2, 4).reshape(L, self.rows.n_blocks, -1, self.rows.b * self.unit // GROUP)
            weights = l1 + self.valid * SELECTION_FLOOR
        flat = weights.reshape(-1, weights.shape[-1])
        if self.opts.selection == "gradient_greedy":
            pick = flat.argmax(-1)
        else:  # inverse-CDF sampling, one draw per pair
            cdf = flat.double().cumsum(-1)
            u = torch.rand(flat.shape[0], 1, generator=self.generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
            pick = torch.searchsorted(cdf, u)[:, 0].clamp_(max=flat.shape[1] - 1)
        return pick.reshape(weights.shape[:-1])

    def sparse_step(self, choice: Tensor, active: Tensor) -> None:
        """Re-solve the chosen group of every block pair exactly (pattern and values).

        Each solve cannot raise the loss; a layer whose recomputed loss still rose by rounding is
        restored exactly.
        """
        L, n_out, n_units = choice.shape
        per_unit = self.unit // GROUP
        rho, gamma = choice // per_unit, choice % per_unit  # row in A's block, group in the unit
        li = torch.arange(L, device=choice.device)[:, None, None]
        pi = torch.arange(n_out, device=choice.device)[None, :, None]
        ui = torch.arange(n_units, device=choice.device)[None, None, :]

        core6 = self._units(self.core).reshape(L, n_out, self.rows.b, n_units, per_unit, GROUP)
        mask6 = self._units(self.mask).reshape(core6.shape)
        b_units = bd.merge(self.b, self.unit).reshape(L, n_units, per_unit, GROUP, self.unit)
        a = self.a.transpose(-1, -2)[li, pi, rho]  # (L, n_out, n_units, b): column rho of A's block
        b_rows = b_units[li, ui, gamma]  # (L, n_out, n_units, 4, unit)
        resid_u = self._units(self.resid)
        contracted = torch.einsum("lpui,lpiuk->lpuk", a, resid_u)  # Rᵀa per pair
        h_u = self.h.reshape(L, 1, n_units, self.unit).expand(-1, n_out, -1, -1)
        current = core6[li, pi, rho, ui, gamma]  # (L, n_out, n_units, 4)
        keep = mask6[li, pi, rho, ui, gamma]

        flat = lambda x: x.reshape(L * n_out * n_units, *x.shape[3:])  # noqa: E731
        values, new_keep = solve_groups(flat(a), flat(b_rows), flat(h_u), flat(contracted), flat(current), flat(keep))
        on = active[:, None, None, None].expand(L, n_out, n_units, 1).reshape(-1, 1)
        values, new_keep = torch.where(on, values, flat(current)), torch.where(on, new_keep, flat(keep))
        core6[li, pi, rho, ui, gamma] = values.reshape(current.shape)
        mask6[li, pi, rho, ui, gamma] = new_keep.reshape(keep.shape)
        change = torch.einsum("lpuk,lpukj->lpuj", values.reshape(current.shape) - current, b_rows)  # Δvᵀ B_S
        cb_rows = self._units(self.cb)[li, pi, rho, ui]
        self._units(self.cb)[li, pi, rho, ui] = cb_rows + change
        resid = self.resid + torch.einsum("lpui,lpuj->lpiuj", a, change).reshape(self.resid.shape)
        loss = self._loss(resid)
        rose = loss > self.loss
        for layer in torch.nonzero(rose).flatten().tolist():  # rounding only: restore that layer exactly
            core6[layer, pi[0], rho[layer], ui[0], gamma[layer]] = current[layer]
            mask6[layer, pi[0], rho[layer], ui[0], gamma[layer]] = keep[layer]
            self._units(self.cb)[layer, pi[0], rho[layer], ui[0]] = cb_rows[layer]
            resid[layer], loss[layer] = self.resid[layer], self.loss[layer]
        self.resid, self.loss = resid, loss

    def result(self, weights_dtype: torch.dtype) -> list[LayerResult]:
        """Denormalised W_hat and the factors with the norms folded in, per layer."""
        out = []
        weights = self.snapshot()
        core = bd.unpad(self._flat(self.core), self.rows, self.cols)
        for i, weight in enumerate(weights):
            out.append(
                LayerResult(
                    weight=weight.to(weights_dtype),
                    extras={
                        "core": core[i].contiguous(),
                        "A": self.a[i].contiguous(),
                        "B": self.b[i].contiguous(),
                        "r_out": self.r_out[i],
                        "r_in": self.r_in[i],
                    },
                )
            )
        return out

    def _flat(self, grid: Tensor) -> Tensor:
        return grid.reshape(grid.shape[0], self.rows.padded, self.cols.padded)

    def snapshot(self) -> Tensor:
        """The current denormalised W_hat of every layer (L, d_out, d_in)."""
        w_hat = bd.unpad(self._flat(bd.left(self.a, self.cb)), self.rows, self.cols)
        return self.r_out[:, :, None] * w_hat * self.r_in[:, None, :]


def optimize(weights: Tensor, h: Tensor, opts: Options) -> tuple[list[LayerResult], Tensor, list[int]]:
    """Run ARMOR on same-shape layers (L, d_out, d_in); returns results, the loss trace (T, L) and its iterations."""
    prob = Problem(weights, h, opts)
    active = torch.ones(weights.shape[0], dtype=torch.bool, device=weights.device)
    rejected = torch.zeros_like(active, dtype=torch.long)
    best, stall = prob.loss.clone(), torch.zeros_like(active, dtype=torch.long)
    trace, trace_at = [prob.loss.clone()], [0]
    snapshots: dict[int, Tensor] = {0: prob.snapshot()} if 0 in opts.snapshots else {}
    it = 0
    for it in range(1, opts.iterations + 1):
        grads = prob.gradients()
        rejected += active & ~prob.continuous_step(grads, active)
        prob.sparse_step(prob.select(grads["core"]), active)
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
    if opts.guard:
        log.info("guard rejected %s Adam steps of %d iterations (per layer)", rejected.tolist(), it)
    results = prob.result(weights.dtype)
    for i, res in enumerate(results):
        res.extras.update({f"snapshot_{k}": v[i].to(weights.dtype) for k, v in snapshots.items()})
    return results, torch.stack(trace), trace_at


def prune_block(weights: dict[str, Tensor], stats: dict[str, LayerStats], options: dict[str, Any]) -> dict[str, LayerResult]:
    """ARMOR on one decoder block: layers of the same shape are optimised as one batch."""
    opts = Options.from_dict(options)
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, w in weights.items():
        by_shape.setdefault(tuple(w.shape), []).append(name)
    out = {}
    for shape, names in by_shape.items():
        w = torch.stack([weights[n] for n in names])
        h = torch.stack([stats[n].h for n in names])
        results, trace, trace_at = optimize(w, h, opts)
        for i, (name, res) in enumerate(zip(names, results)):
            res.extras["trace"] = trace[:, i].contiguous()
            res.extras["trace_iterations"] = torch.tensor(trace_at)
            out[name] = res
        log.info(
            "armor %s %s: loss %s -> %s in %d iterations",
            options.get("prefix", ""), "x".join(map(str, shape)),
            " ".join(f"{x:.4f}" for x in trace[0].tolist()), " ".join(f"{x:.4f}" for x in trace[-1].tolist()), trace_at[-1],
        )
    return out
