"""A deliberately plain ARMOR iteration, one layer at a time, to check the batched optimiser against.

Dense matrices built with torch.block_diag, autograd for every gradient, Hessian product and Jacobian, torch.optim.Adam
(neither fused nor foreach), Python loops over block pairs and groups, and torch.linalg.lstsq for every least-squares
problem. Slow and obviously right; nothing here is shared with src/armor/optimizer.
"""

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

GROUP = 4
ROW_SWEEP_UNIT = 16  # the widest column unit whose groups are re-solved with the rest of their row
STALL_GAIN = 0.01  # Gauss–Newton: a group sweep that lowered the loss by less than this fraction is followed by a row
STALLED_ROW_SWEEP_UNIT = 64  # sweep, where the column unit is at most this wide
CG_STALL = 1.0  # Gauss–Newton, `auto`: a CG solve ending with its preconditioned residual norm at least this fraction
ROW_CORE_UNIT = 64  # of its start makes the core preconditioner row-exact from then on, where the unit is this narrow
SWITCH_DAMPING = 1e-4  # and the damping at least this


class ReferenceLayer:
    """One layer: W̄ (d_out, d_in), h (d_in,), A and B as lists of real (ragged) blocks, core values V and mask M."""

    def __init__(self, w_bar: Tensor, h: Tensor, a_blocks: list[Tensor], b_blocks: list[Tensor], core: Tensor, mask: Tensor, block_size: int) -> None:
        self.w_bar, self.h, self.mask = w_bar, h, mask.clone()
        self.b = block_size
        self.unit = math.lcm(block_size, GROUP)
        self.a_blocks = [blk.clone().requires_grad_() for blk in a_blocks]
        self.b_blocks = [blk.clone().requires_grad_() for blk in b_blocks]
        self.values = (core * mask).clone().requires_grad_()
        self.z = (h * w_bar.square()).sum()
        self.adam: torch.optim.Adam | None = None
        self.previous: list[Tensor] | None = None  # the sweep solver's last point: A blocks, B blocks, values
        self.beta = 1.0
        self.damping, self.gauss_newton_steps = 1e-2, 0  # the Gauss–Newton solver's λ and step count
        self.stalled = False  # the Gauss–Newton solver's last group sweep gained under STALL_GAIN
        self.row_core = False  # the Gauss–Newton solver's CG stalled once under `auto`: row-exact core blocks since

    def to(self, dtype: torch.dtype) -> "ReferenceLayer":
        """The same layer with every tensor in `dtype`."""
        return ReferenceLayer(
            self.w_bar.to(dtype), self.h.to(dtype), [x.detach().to(dtype) for x in self.a_blocks],
            [x.detach().to(dtype) for x in self.b_blocks], self.values.detach().to(dtype), self.mask, self.b,
        )

    def matrices(self) -> tuple[Tensor, Tensor]:
        """A (d_out, d_out) and B (d_in, d_in) as dense block-diagonal matrices."""
        return torch.block_diag(*self.a_blocks), torch.block_diag(*self.b_blocks)

    def loss_of(self, core: Tensor) -> Tensor:
        """The relative proxy loss of A · core · B, differentiable."""
        a, b = self.matrices()
        return (self.h * (a @ core @ b - self.w_bar).square()).sum() / self.z

    def loss(self) -> float:
        """The current relative proxy loss."""
        with torch.no_grad():
            return float(self.loss_of(self.values * self.mask))

    def adam_step(self, lr: float) -> None:
        """One step of torch.optim.Adam (plain, single-tensor) on A's blocks, B's blocks and the masked core values."""
        if self.adam is None:
            self.adam = torch.optim.Adam(self.a_blocks + self.b_blocks + [self.values], lr=lr, foreach=False, fused=False)
        self.adam.zero_grad()
        self.loss_of(self.values * self.mask).backward()
        self.adam.step()

    def core_gradient(self) -> Tensor:
        """∂L/∂core at the current masked core (d_out, d_in), by autograd."""
        core = (self.values * self.mask).detach().requires_grad_()
        return torch.autograd.grad(self.loss_of(core), core)[0]

    def exact_step(self, cg_steps: int) -> None:
        """Least-squares A blocks, then least-squares B blocks, then CG on the kept core values."""
        d_out, d_in = self.w_bar.shape
        sqrt_h = self.h.sqrt()
        with torch.no_grad():
            core = self.values * self.mask
            _, b = self.matrices()
            y = core @ b
            for p, blk in enumerate(self.a_blocks):
                rows = slice(p * self.b, p * self.b + blk.shape[0])
                solution = torch.linalg.lstsq((y[rows] * sqrt_h).T, (self.w_bar[rows] * sqrt_h).T).solution  # A_pᵀ
                blk.copy_(solution.T)
            a, _ = self.matrices()
            x = a @ core
            for q, blk in enumerate(self.b_blocks):
                cols = slice(q * self.b, q * self.b + blk.shape[0])
                blk.copy_(torch.linalg.lstsq(x[:, cols], self.w_bar[:, cols]).solution)
        self._conjugate_gradient(cg_steps)

    def _conjugate_gradient(self, steps: int) -> None:
        """`steps` conjugate-gradient steps with exact line search on the kept core values."""

        def grad(v: Tensor) -> Tensor:
            """The loss gradient on the kept values, by autograd."""
            v = v.detach().requires_grad_()
            return torch.autograd.grad(self.loss_of(v * self.mask), v)[0] * self.mask

        def hessian_product(d: Tensor) -> Tensor:
            """The Hessian of the loss on the kept values times d, by autograd."""
            v = self.values.detach()
            return torch.autograd.functional.hvp(lambda u: self.loss_of(u * self.mask), v, d)[1] * self.mask

        residual = -grad(self.values)
        direction = residual.clone()
        for _ in range(steps):
            hd = hessian_product(direction)
            curvature = (direction * hd).sum()
            alpha = (residual * direction).sum() / curvature if curvature > 0 else torch.zeros(())
            with torch.no_grad():
                self.values += alpha * direction
            before = (residual * residual).sum()
            residual = residual - alpha * hd
            beta = (residual * residual).sum() / before if before > 0 else torch.zeros(())
            direction = residual + beta * direction

    def sparse_step(self, solves: int = 1) -> None:
        """Greedy selection and the exact group solve over all six 2-of-4 patterns, one (row block, unit) pair at a time.

        The group is chosen once from the gradient and solved `solves` times (the batched optimiser's draws).
        """
        if solves == 0:
            return
        d_out, d_in = self.w_bar.shape
        grad = self.core_gradient()
        for p in range(math.ceil(d_out / self.b)):
            for u in range(math.ceil(d_in / self.unit)):
                candidates = [
                    (row, col)
                    for row in range(p * self.b, min((p + 1) * self.b, d_out))
                    for col in range(u * self.unit, min((u + 1) * self.unit, d_in), GROUP)
                ]
                scores = torch.stack([grad[row, col : col + GROUP].abs().sum() for row, col in candidates])
                for _ in range(solves):
                    self._solve_group(*candidates[int(scores.argmax())])

    def _solve_group(self, row: int, col: int) -> None:
        """Re-solve one group of 4 over all six patterns by least squares; keep the best, the current one included."""
        a, b = self.matrices()
        with torch.no_grad():
            core = self.values * self.mask
            best_loss, best_keep, best_values = float(self.loss_of(core)), None, None
            zeroed = core.clone()
            zeroed[row, col : col + GROUP] = 0
            rest = (a @ zeroed @ b - self.w_bar) * self.h.sqrt()  # weighted residual without the group
            for keep in itertools.combinations(range(GROUP), 2):
                design = torch.stack([(a[:, row, None] * b[col + k][None, :] * self.h.sqrt()).flatten() for k in keep], 1)
                v = torch.linalg.lstsq(design, -rest.flatten()[:, None]).solution[:, 0]
                trial = zeroed.clone()
                trial[row, col + keep[0]], trial[row, col + keep[1]] = v[0], v[1]
                trial_loss = float(self.loss_of(trial))
                if trial_loss < best_loss:
                    best_loss, best_keep, best_values = trial_loss, keep, v
            if best_keep is not None:
                self.mask[row, col : col + GROUP] = False
                self.values[row, col : col + GROUP] = 0
                for k, v in zip(best_keep, best_values):
                    self.mask[row, col + k] = True
                    self.values[row, col + k] = v

    def _solve_group_with_row(self, row: int, col: int, start: int, stop: int) -> None:
        """Re-solve one group of 4 over all six patterns, each time re-solving every kept value of its row segment
        [start, stop) (the other groups keep their patterns) by least squares; keep the best, the current values
        included."""
        a, b = self.matrices()
        with torch.no_grad():
            core = self.values * self.mask
            best_loss, best_keep, best_row = float(self.loss_of(core)), None, None
            zeroed = core.clone()
            zeroed[row, start:stop] = 0
            rest = (a @ zeroed @ b - self.w_bar) * self.h.sqrt()  # weighted residual without the row segment
            others = [c for c in range(start, stop) if self.mask[row, c] and not col <= c < col + GROUP]
            for keep in itertools.combinations(range(GROUP), 2):
                kept = sorted(others + [col + k for k in keep])
                design = torch.stack([(a[:, row, None] * b[c][None, :] * self.h.sqrt()).flatten() for c in kept], 1)
                v = torch.linalg.lstsq(design, -rest.flatten()[:, None]).solution[:, 0]
                trial = zeroed.clone()
                trial[row, kept] = v
                trial_loss = float(self.loss_of(trial))
                if trial_loss < best_loss:
                    best_loss, best_keep, best_row = trial_loss, (kept, keep), trial[row, start:stop].clone()
            if best_keep is not None:
                kept, keep = best_keep
                self.mask[row, col : col + GROUP] = False
                for k in keep:
                    self.mask[row, col + k] = True
                self.values[row, start:stop] = best_row

    def _weighted_residual(self, a_blocks: list[Tensor], b_blocks: list[Tensor], values: Tensor) -> Tensor:
        """(A · (V ⊙ M) · B − W̄) ⊙ √h, flattened, as a function of the blocks and the core values."""
        core = values * self.mask
        return ((torch.block_diag(*a_blocks) @ core @ torch.block_diag(*b_blocks) - self.w_bar) * self.h.sqrt()).flatten()

    def gauss_newton_step(self, cg_steps: int, sweep_every: int, core_preconditioner: str = "auto") -> None:
        """A Levenberg–Marquardt step by dense Jacobian and plain preconditioned CG, kept only if the loss did not rise;
        every `sweep_every` steps (from the first) every group re-solved by brute force. The core's preconditioner
        blocks are each row's kept values under `row`, or under `auto` once a CG solve ended no better than it began."""
        n_a, n_b = len(self.a_blocks), len(self.b_blocks)
        point = [x.detach() for x in self.a_blocks + self.b_blocks + [self.values]]

        def residual(*x: Tensor) -> Tensor:
            """The weighted residual at a point given as a flat argument list."""
            return self._weighted_residual(list(x[:n_a]), list(x[n_a : n_a + n_b]), x[-1])

        jac = torch.cat([j.flatten(1) for j in torch.autograd.functional.jacobian(residual, tuple(point), vectorize=True)], 1)  # (d_out·d_in, n)
        diag = jac.square().sum(0)  # the diagonal of the Gram matrix JᵀJ

        def system(idx: Tensor) -> Tensor:
            """Rows and columns idx of the damped Gram matrix JᵀJ + λ·diag(JᵀJ)."""
            return jac[:, idx].T @ jac[:, idx] + self.damping * torch.diag(diag[idx])

        row_core = core_preconditioner == "row" or self.row_core
        core_sets = self._kept_sets(sum(x.numel() for x in point[:-1])) if row_core else []
        precondition = self._preconditioner(system, (1 + self.damping) * diag, [x.shape for x in point], n_a, core_sets)
        r = -jac.T @ residual(*point).detach()
        x, z = torch.zeros_like(r), precondition @ r
        d, rz = z.clone(), r @ z
        rz_start = rz
        for _ in range(cg_steps):
            product = jac.T @ (jac @ d) + self.damping * diag * d
            curvature = d @ product
            alpha = rz / curvature if curvature > 0 else torch.zeros(())
            x, r = x + alpha * d, r - alpha * product
            z = precondition @ r
            rz_next = r @ z
            d, rz = z + (rz_next / rz if rz > 0 else 0.0) * d, rz_next
        switched = core_preconditioner == "auto" and self.unit <= ROW_CORE_UNIT and rz.sqrt() >= CG_STALL * rz_start.sqrt() and not self.row_core
        self.row_core = self.row_core or switched
        start = self.loss()
        reached = self._point()
        moved, offset = [], 0
        for value in point:
            moved.append(value + x[offset : offset + value.numel()].view(value.shape))
            offset += value.numel()
        self._set_point(moved)
        if self.loss() > start:
            self._set_point(reached)
        self.damping = self.damping / 3 if self.loss() < start else max(self.damping * 4, 1e-6)
        if switched:
            self.damping = max(self.damping, SWITCH_DAMPING)
        self.gauss_newton_steps += 1
        if (self.gauss_newton_steps - 1) % sweep_every == 0:
            start, by_rows = self.loss(), self.unit <= ROW_SWEEP_UNIT or self.stalled
            self._sweep_groups(by_rows)
            gained_little = self.loss() > (1 - STALL_GAIN) * start
            self.stalled = not by_rows and self.unit <= STALLED_ROW_SWEEP_UNIT and gained_little

    def _kept_sets(self, offset: int) -> list[Tensor]:
        """The flat indices (after `offset`, the core values' row-major start) of each row's kept values in each
        column block of B."""
        d_out, d_in = self.mask.shape
        sets = []
        for i in range(d_out):
            for start in range(0, d_in, self.b):
                cols = torch.arange(start, min(start + self.b, d_in))
                cols = cols[self.mask[i, cols] > 0]
                if len(cols):
                    sets.append(offset + i * d_in + cols)
        return sets

    @staticmethod
    def _preconditioner(system: Callable[[Tensor], Tensor], diagonal: Tensor, shapes: list[torch.Size], n_a: int,
                        core_sets: list[Tensor]) -> Tensor:
        """The inverse of the system's blocks (`system(idx)`: its rows and columns idx; `diagonal`: its diagonal) on
        each row of each A block, each column of each B block and each index set of `core_sets` (with a ridge of 1e-6
        times the block's largest diagonal entry, a unit diagonal where a block is zero), and of its diagonal on the
        other core values."""
        n = len(diagonal)
        inverse = torch.zeros(n, n, dtype=diagonal.dtype)
        sets, offset = [], 0
        for i, shape in enumerate(shapes[:-1]):
            rows, cols = shape
            index = torch.arange(offset, offset + rows * cols).view(rows, cols)
            sets += list(index) if i < n_a else list(index.T)  # A: one row at a time; B: one column
            offset += rows * cols
        for idx in sets + core_sets:
            block = system(idx)
            diag = block.diagonal()
            shift = 1e-6 * diag.max() + (diag == 0).to(block.dtype)
            inverse[idx[:, None], idx[None, :]] = torch.linalg.inv(block + torch.diag(shift))
        core = torch.arange(offset, n)
        if core_sets:
            core = core[~torch.isin(core, torch.cat(core_sets))]
        inverse[core, core] = 1 / (diagonal[core] + 1e-30)
        return inverse

    def _sweep_groups(self, by_rows: bool | None = None) -> None:
        """Every group re-solved by brute force, one pair at a time and row by row within a pair: with the rest of its
        row segment re-solved where `by_rows` (by default where the column unit is at most 16 wide), alone elsewhere."""
        by_rows = self.unit <= ROW_SWEEP_UNIT if by_rows is None else by_rows
        d_out, d_in = self.w_bar.shape
        for p in range(math.ceil(d_out / self.b)):
            for u in range(math.ceil(d_in / self.unit)):
                start, stop = u * self.unit, min((u + 1) * self.unit, d_in)
                for row in range(p * self.b, min((p + 1) * self.b, d_out)):
                    for col in range(start, stop, GROUP):
                        if by_rows:
                            self._solve_group_with_row(row, col, start, stop)
                        else:
                            self._solve_group(row, col)

    def sweep_step(self) -> None:
        """Least-squares A blocks, least-squares B blocks, then every group re-solved by brute force, one pair at a time
        and row by row within a pair, then the extrapolation."""
        self.exact_step(0)
        self._sweep_groups()
        self._extrapolate()

    def _point(self) -> list[Tensor]:
        """A copy of A's blocks, B's blocks and the masked core values."""
        with torch.no_grad():
            return [x.detach().clone() for x in self.a_blocks + self.b_blocks] + [(self.values * self.mask).detach()]

    def _set_point(self, point: list[Tensor]) -> None:
        """Overwrite A's blocks, B's blocks and the core values (masked)."""
        with torch.no_grad():
            for x, value in zip(self.a_blocks + self.b_blocks + [self.values], point):
                x.copy_(value)
            self.values.mul_(self.mask)

    def _extrapolate(self) -> None:
        """Try x + β (x − x_prev); keep it if the loss fell (β × 1.5, at most 8), else go back (β × 0.5, at least 0.25)."""
        reached = self._point()
        if self.previous is not None:
            start = self.loss()
            self._set_point([x + self.beta * (x - y) for x, y in zip(reached, self.previous)])
            if self.loss() < start:
                self.beta = min(self.beta * 1.5, 8.0)
                reached = self._point()
            else:
                self._set_point(reached)
                self.beta = max(self.beta * 0.5, 0.25)
        self.previous = reached

    def iterate(self, solver: str, lr: float, cg_steps: int, sparse_steps: int, sweep_every: int = 3,
                core_preconditioner: str = "auto") -> float:
        """One iteration (the solver's step, then the sparse steps); returns the loss after it."""
        if solver == "adam":
            self.adam_step(lr)
        elif solver == "sweep":
            self.sweep_step()
        elif solver == "gauss_newton":
            self.gauss_newton_step(cg_steps, sweep_every, core_preconditioner)
        else:
            self.exact_step(cg_steps)
        self.sparse_step(sparse_steps)
        return self.loss()
