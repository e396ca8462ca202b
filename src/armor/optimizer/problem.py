"""ARMOR's state for L same-shape layers: A · (W' ⊙ M) · B against W̄ in padded grid form, and the steps both solvers share.

Grid form views a padded (L, P_out, P_in) matrix as (L, n_out, b, n_in, b), so block-diagonal products are
batched matmuls. Every state tensor is contiguous and owned here; steps update them in place.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from armor.normalize import normalize
from armor.optimizer import blockdiag as bd
from armor.optimizer.covariance import whitening
from armor.optimizer.sparse_core import solve_groups
from armor.sparsity import GROUP, mask_24

SELECTIONS = ("gradient_random", "gradient_greedy", "random")
SELECTION_FLOOR = 1e-30  # added to valid candidates so a pair with zero gradient samples uniformly


class Problem:
    """Normalised weights, activation weights h, the 2:4 core with its mask, and A, B, for L layers of one shape.

    With `covariance` (XᵀX/n, (L, d_in, d_in)) the loss is the block-covariance proxy, solved as the diagonal proxy of
    the whitened W̄ L (`covariance.py`): w_bar, h and b then hold W̄ L, ones and B̃ = B L.
    """

    def __init__(self, weights: Tensor, h: Tensor, block_size: int, seed: int = 0, covariance: Tensor | None = None) -> None:
        if weights.dim() != 3 or h.shape != (weights.shape[0], weights.shape[2]):
            raise ValueError(f"expected weights (L, d_out, d_in) and h (L, d_in), got {tuple(weights.shape)} and {tuple(h.shape)}")
        for name, x in (("h", h), ("covariance", covariance)):
            if x is not None and (x.dtype != weights.dtype or x.device != weights.device):
                raise ValueError(f"{name} ({x.dtype}, {x.device}) must match the weights ({weights.dtype}, {weights.device})")
        if covariance is not None and covariance.shape != (weights.shape[0], weights.shape[2], weights.shape[2]):
            raise ValueError(f"expected covariance (L, d_in, d_in) = {tuple(weights.shape[::2]) + (weights.shape[2],)}, got {tuple(covariance.shape)}")
        L, d_out, d_in = weights.shape
        b = block_size
        self.rows, self.cols = bd.layout(d_out, b), bd.layout(d_in, b, GROUP)
        self.unit = math.lcm(b, GROUP)  # columns solved together in the sparse step
        dev, dt = weights.device, weights.dtype
        w_bar, r_in, r_out = zip(*(normalize(w) for w in weights))
        w_bar = torch.stack(w_bar)  # (L, d_out, d_in)
        self.r_in, self.r_out = torch.stack(r_in), torch.stack(r_out)  # (L, d_in), (L, d_out)
        self.w_bar = self._grid(bd.pad(w_bar, self.rows, self.cols))
        self.mask = self._grid(bd.pad(mask_24(w_bar.square() * h[:, None, :]), self.rows, self.cols))  # NoWag-P start
        self.core = self.w_bar * self.mask  # C = W' ⊙ M
        self.a = bd.identity(self.rows, L, dt, dev)  # (L, n_out, b, b)
        self.b = bd.identity(self.cols, L, dt, dev)  # (L, n_in, b, b)
        self.b_inverse: Tensor | None = None  # the block-covariance proxy's L⁻¹ blocks: B = B̃ L⁻¹ (covariance.py)
        if covariance is not None:
            self.b, self.b_inverse = whitening(covariance, self.cols)
            self.w_bar = bd.right(self.w_bar, self.b)  # W̄ L
            h = torch.ones_like(h)
        self.h = F.pad(h, (0, self.cols.padded - d_in)).contiguous()  # (L, P_in), zero on padding
        self.h_grid = self.h.reshape(L, 1, 1, self.cols.n_blocks, b)
        self.z = (self.w_bar.square() * self.h_grid).sum((1, 2, 3, 4), dtype=torch.float64)  # (L,) loss of the zero matrix
        self.grad_scale = (2 * self.h_grid / self.z.to(dt)[:, None, None, None, None]).contiguous()  # ∂L/∂Ŵ = resid · this
        self.generator = torch.Generator(device=dev).manual_seed(seed)

        per_unit = self.unit // GROUP
        n_units = self.cols.padded // self.unit
        row_ok = torch.arange(self.rows.padded, device=dev).reshape(self.rows.n_blocks, b) < d_out
        group_ok = torch.arange(0, self.cols.padded, GROUP, device=dev).reshape(n_units, per_unit) < d_in
        self.valid = (row_ok[:, None, :, None] & group_ok[None, :, None, :]).reshape(self.rows.n_blocks, n_units, -1).to(dt)
        self.refresh()

    @property
    def layers(self) -> int:
        """How many layers the batch holds."""
        return self.a.shape[0]

    def _grid(self, x: Tensor) -> Tensor:
        """A padded (L, d_out, d_in) tensor as a contiguous block grid (L, n_out, b, n_in, b)."""
        return bd.grid(x, self.rows, self.cols).contiguous()

    def _units(self, x: Tensor) -> Tensor:
        """A contiguous grid (L, n_out, b, n_in, b) viewed as (L, n_out, b, n_units, unit)."""
        return x.view(*x.shape[:3], -1, self.unit)

    def params(self) -> dict[str, Tensor]:
        """The continuous variables, by name: A's blocks, B's blocks and the core."""
        return {"a": self.a, "b": self.b, "core": self.core}

    def set_state(self, a: Tensor, b: Tensor, core: Tensor, mask: Tensor) -> None:
        """Overwrite A, B (blocks) and the core and mask (grid form) in place, e.g. to start away from the identity."""
        for name, value in (("a", a), ("b", b), ("core", core), ("mask", mask)):
            target = getattr(self, name)
            if value.shape != target.shape:
                raise ValueError(f"{name}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}")
            target.copy_(value)
        self.core.mul_(self.mask)
        self.refresh()

    def loss_of(self, resid: Tensor) -> Tensor:
        """Proxy loss per layer (float64) of a residual A·C·B − W̄ in grid form."""
        col_sq = torch.linalg.vector_norm(resid, dim=(1, 2)).double().square()  # (L, n_in, b)
        return (col_sq * self.h_grid[:, 0, 0]).sum((1, 2)) / self.z

    def refresh(self) -> None:
        """Recompute C·B, the residual and the loss from A, B and the core."""
        self.cb = bd.right(self.core, self.b)
        self.refresh_residual()

    def refresh_residual(self) -> None:
        """Recompute the residual and the loss after A changed (C·B still holds)."""
        self.resid = bd.left(self.a, self.cb) - self.w_bar
        self.loss = self.loss_of(self.resid)

    def _weighted_back(self, d: Tensor) -> tuple[Tensor, Tensor]:
        """Aᵀ D and Aᵀ D Bᵀ for D in grid form."""
        atd = bd.left(self.a.transpose(-1, -2), d)
        return atd, bd.right(atd, self.b.transpose(-1, -2))

    def gradients(self) -> dict[str, Tensor]:
        """∂L/∂A, ∂L/∂B (on the blocks) and ∂L/∂C (dense: also at pruned positions), each contiguous."""
        d = self.resid * self.grad_scale  # ∂L/∂Ŵ
        atd, grad_core = self._weighted_back(d)
        return {
            "a": bd.row_gram(d, self.cb),  # D (C B)ᵀ
            "b": bd.column_gram(bd.columns(self.core), bd.columns(atd)),  # Cᵀ Aᵀ D
            "core": grad_core,  # Aᵀ D Bᵀ
        }

    def core_gradient(self) -> Tensor:
        """∂L/∂C = Aᵀ D Bᵀ at every position, pruned ones included (for group selection)."""
        return self._weighted_back(self.resid * self.grad_scale)[1]

    def hessian_product(self, direction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For a core direction P: P·B, A·P·B and the Hessian product Aᵀ((A·P·B) ⊙ 2h/z)Bᵀ ⊙ M."""
        pb = bd.right(direction, self.b)
        apb = bd.left(self.a, pb)
        return pb, apb, self._weighted_back(apb * self.grad_scale)[1] * self.mask

    def select(self, grad_core: Tensor, selection: str, draws: int = 1) -> Tensor:
        """`draws` group indices per (row block of A, column unit), (draws, L, n_out, n_units), as row * groups_per_unit + group.

        Greedy selection gives the same group in every draw; the sampled ones draw independently.
        """
        L, n_out = grad_core.shape[:2]
        if selection == "random":
            weights = self.valid.expand(L, -1, -1, -1)
        elif selection in ("gradient_random", "gradient_greedy"):
            per_unit = self.unit // GROUP
            l1 = grad_core.abs().reshape(L, n_out, self.rows.b, -1, per_unit, GROUP).sum(-1)  # (L, n_out, b, n_units, per_unit)
            weights = l1.permute(0, 1, 3, 2, 4).reshape(L, n_out, -1, self.rows.b * per_unit) + self.valid * SELECTION_FLOOR
        else:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        flat = weights.reshape(-1, weights.shape[-1])
        if selection == "gradient_greedy":
            pick = flat.argmax(-1, keepdim=True).expand(-1, draws)
        else:  # inverse-CDF sampling, `draws` per pair
            cdf = flat.double().cumsum(-1)
            u = torch.rand(flat.shape[0], draws, generator=self.generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
            pick = torch.searchsorted(cdf, u).clamp_(max=flat.shape[1] - 1)
        return pick.T.reshape(draws, *weights.shape[:-1])

    def sparse_step(self, choice: Tensor, active: Tensor) -> None:
        """Re-solve the chosen group of every (row block, column unit) pair exactly: its pattern and values.

        No solve raises the loss; a layer whose recomputed loss still rose by rounding is restored exactly.
        """
        L, n_out, n_units = choice.shape
        per_unit = self.unit // GROUP
        rho, gamma = choice // per_unit, choice % per_unit  # row in A's block, group in the unit
        li = torch.arange(L, device=choice.device)[:, None, None]
        pi = torch.arange(n_out, device=choice.device)[None, :, None]
        ui = torch.arange(n_units, device=choice.device)[None, None, :]

        core_g = self._units(self.core).view(L, n_out, self.rows.b, n_units, per_unit, GROUP)
        mask_g = self._units(self.mask).view(core_g.shape)
        cb_u = self._units(self.cb)
        b_rows = bd.merge(self.b, self.unit).view(L, n_units, per_unit, GROUP, self.unit)[li, ui, gamma]  # (L, n_out, n_units, 4, U)
        a_col = self.a.transpose(-1, -2)[li, pi, rho]  # (L, n_out, n_units, b): column rho of A's block p
        contracted = torch.einsum("lpui,lpiuk->lpuk", a_col, self._units(self.resid))  # Rᵀa per pair, (L, n_out, n_units, U)
        h_u = self.h.view(L, 1, n_units, self.unit).expand(-1, n_out, -1, -1)
        current = core_g[li, pi, rho, ui, gamma]  # (L, n_out, n_units, 4)
        keep = mask_g[li, pi, rho, ui, gamma]

        def flat(x: Tensor) -> Tensor:
            """(L, n_out, n_units, ...) flattened to one batch of groups."""
            return x.reshape(L * n_out * n_units, *x.shape[3:])

        values, new_keep = solve_groups(flat(a_col), flat(b_rows), flat(h_u), flat(contracted), flat(current), flat(keep))
        on = active.repeat_interleave(n_out * n_units)[:, None]
        values = torch.where(on, values, flat(current)).view(current.shape)
        new_keep = torch.where(on, new_keep, flat(keep)).view(keep.shape)
        change = torch.einsum("lpuk,lpukj->lpuj", values - current, b_rows)  # Δvᵀ B_S per pair, (L, n_out, n_units, U)
        cb_rows = cb_u[li, pi, rho, ui]  # (L, n_out, n_units, U)
        resid = self.resid + torch.einsum("lpui,lpuj->lpiuj", a_col, change).reshape(self.resid.shape)
        loss = self.loss_of(resid)
        ok = (loss <= self.loss) | ~active
        values = torch.where(ok[:, None, None, None], values, current)
        new_keep = torch.where(ok[:, None, None, None], new_keep, keep)
        core_g[li, pi, rho, ui, gamma] = values
        mask_g[li, pi, rho, ui, gamma] = new_keep
        cb_u[li, pi, rho, ui] = cb_rows + torch.where(ok[:, None, None, None], change, 0)
        self.resid = torch.where(ok[:, None, None, None, None], resid, self.resid)
        self.loss = torch.where(ok, loss, self.loss)

    def _flat(self, grid: Tensor) -> Tensor:
        """A block grid back as padded matrices (L, d_out_padded, d_in_padded)."""
        return grid.reshape(grid.shape[0], self.rows.padded, self.cols.padded)

    def b_blocks(self) -> Tensor:
        """B's blocks (L, n_in, b, b) of Ŵ = A·C·B: B̃ L⁻¹ under the block-covariance proxy, B itself otherwise."""
        return self.b if self.b_inverse is None else self.b @ self.b_inverse

    def snapshot(self) -> Tensor:
        """The current denormalised Ŵ of every layer (L, d_out, d_in)."""
        cb = self.cb if self.b_inverse is None else bd.right(self.cb, self.b_inverse)
        w_hat = bd.unpad(self._flat(bd.left(self.a, cb)), self.rows, self.cols)
        return self.r_out[:, :, None] * w_hat * self.r_in[:, None, :]

    def factors(self) -> list[dict[str, Tensor]]:
        """Per layer: the 2:4 core (d_out, d_in), A and B blocks (n, b, b) and the NoWag norms, all contiguous."""
        core = bd.unpad(self._flat(self.core), self.rows, self.cols)
        b_blocks = self.b_blocks()
        return [
            {"core": core[i].contiguous(), "A": self.a[i].contiguous(), "B": b_blocks[i].contiguous(),
             "r_out": self.r_out[i].contiguous(), "r_in": self.r_in[i].contiguous()}
            for i in range(self.layers)
        ]
