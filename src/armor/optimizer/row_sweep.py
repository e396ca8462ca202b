"""The row sweep (ours, not the paper's): every group's 2:4 pattern chosen with the rest of its row re-solved.

Choosing a group's best pattern with every other value fixed (the group sweep, `sweep.py`) soon stops changing the
mask: where it changes a few dozen groups, a pattern change that lets the other kept values of the row follow still
lowers the loss for thousands. For row r of a pair the loss is f(v) = 2 vᵀ l + vᵀ P_rr Q v in the row's U values
(`pairs.py`), with l = Γ_r − P_rr Q c at the current values c. With the other groups' patterns fixed, the best row
for each of a group's six patterns follows from the Schur complement of the row's other kept values: a 4 × 4
quadratic that `sparse_core`'s six-pattern search solves. The inverse of the row's kept block (k = U/2 slots, two per
group) is built once per row and kept up to date by rank-2 updates in the pairs whose pattern changes, so a group
costs O(k²) per pair. Groups go in Gauss–Seidel order within a row, rows in order within a pair, later rows seeing the changes
through Γ; a row keeps its new values only where its exact quadratic fell, so no sweep raises the loss. Values are
scaled to a unit diagonal (Q̃ = D⁻¹ Q D⁻¹ does not depend on the row), and padded or dead entries are decoupled
slots that stay zero. The work per group grows with U², so it is for units of up to 16 columns (b ≤ 16).
"""

import torch
from torch import Tensor

from armor.optimizer.pairs import Grid, Pairs, settle
from armor.optimizer.problem import Problem
from armor.optimizer.sparse_core import pattern_losses, pattern_systems
from armor.sparsity import GROUP, PATTERNS

RIDGE = 8.0  # times the dtype's epsilon, added to the unit diagonal of a row's kept block: bounds its inverse where
# columns nearly coincide
FUSED_ON_CPU = True  # the compiled per-pair kernel on CPU tensors; off, the batched operations run there too
CHUNK = 1 << 22  # kept-block entries inverted at once (bounds the gather index's memory)
PATTERN_KEEP = torch.zeros(len(PATTERNS), GROUP, dtype=torch.bool).scatter_(1, PATTERNS, True)  # (6, 4)
MASK_BITS = torch.tensor([1, 2, 4, 8])  # a group's mask (4,) as a 4-bit code: the sum of its kept positions' bits


def _kept_by_code() -> Tensor:
    """A group's two kept positions by its mask bits (1, 2, 4, 8), (16, 2); (0, 1) unless exactly two are set."""
    table = torch.tensor([[0, 1]] * 16)
    table[(PATTERN_KEEP.long() * MASK_BITS).sum(1)] = PATTERNS
    return table


KEPT_BY_CODE = _kept_by_code()


def gauss_jordan_inverse(m: Tensor) -> Tensor:
    """Inverses of symmetric positive definite matrices (k, k, *batch), components first, without pivoting."""
    a = m.clone()
    for j in range(a.shape[0]):
        pivot = a[j, j].reciprocal()  # (*batch)
        row = a[j] * pivot  # (k, *batch)
        column = a[:, j].clone()  # (k, *batch)
        a -= column[:, None] * row[None]
        a[j] = row
        a[:, j] = -column * pivot
        a[j, j] = pivot
    return a


def inverse_2x2(m: Tensor) -> Tensor:
    """Inverses of 2 × 2 matrices (2, 2, *batch)."""
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    return torch.stack([m[1, 1], -m[0, 1], -m[1, 0], m[0, 0]]).view(m.shape) / det


def kept_positions(mask: Tensor, valid: Tensor) -> Tensor:
    """Positions (k, *batch) of the kept entries of groups (G, 4, *batch), two per group in order; an invalid group
    (padding: nothing kept) gets its first two positions."""
    G, tail = mask.shape[0], [1] * (mask.dim() - 2)
    bits = MASK_BITS.to(mask.device).view(1, GROUP, *tail)
    code = (mask.long() * bits).sum(1) * valid.bool()  # (G, *batch): which two of four are kept; 0 if invalid
    order = KEPT_BY_CODE.to(mask.device)[code].movedim(-1, 1)  # (G, 2, *batch)
    offsets = torch.arange(0, G * GROUP, GROUP, device=mask.device).view(G, 1, *tail)
    return (order + offsets).reshape(2 * G, *mask.shape[2:])


def kept_block(q: Tensor, pos: Tensor) -> Tensor:
    """q (U, U, *batch) restricted to the kept positions pos (k, *batch) on both sides: (k, k, *batch)."""
    u, k = q.shape[0], pos.shape[0]
    index = (pos[:, None] * u + pos[None]).reshape(k * k, *pos.shape[1:])
    return q.reshape(u * u, *q.shape[2:]).gather(0, index).view(k, k, *pos.shape[1:])


def quadratic(v: Tensor, lin: Tensor, q: Tensor) -> Tensor:
    """2 vᵀ lin + vᵀ q v for v, lin (U, *batch) and q (U, U, *batch)."""
    return (v * (2 * lin + (q * v[None]).sum(1))).sum(0)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """Products of matrices a (i, j, N) and b (j, c, N) over the N last: (i, c, N)."""
    return (a[:, :, None] * b[None]).sum(1)


def _row_step(q: Tensor, lin: Tensor, values: Tensor, keep: Tensor, valid: Tensor, pos: Tensor, inv: Tensor) -> None:
    """Every group of one row in Gauss–Seidel order, in place: q (U, U, N), lin, values (U, N), keep (G, 4, N),
    valid (G, N), pos (k, N) and inv (k, k, N) the inverse of the kept block."""
    G, N = keep.shape[0], lin.shape[-1]
    k, dt, dev = 2 * G, lin.dtype, lin.device
    patterns, keep_table = PATTERNS.to(dev), PATTERN_KEEP.to(dev)
    embed = torch.zeros(len(PATTERNS), 2, GROUP, dtype=dt, device=dev).scatter_(2, patterns[..., None], 1.0)  # (6, 2, 4)
    slot_group = torch.arange(k, device=dev) // 2
    f_cur = quadratic(values, lin, q)
    for g in range(G):
        s, cols = slice(2 * g, 2 * g + 2), slice(GROUP * g, GROUP * (g + 1))
        others = (slot_group != g).to(dt)[:, None]  # (k, 1): the slots of the other groups
        col = inv[:, s]  # (k, 2, N)
        coupling = _mm(col, inverse_2x2(inv[s, s]))  # (k, 2, N)
        q_sr = q[cols].gather(1, pos[None].expand(GROUP, k, N)) * others[None]  # Q̃[S, R], (4, k, N)
        rhs = torch.cat([q_sr.transpose(0, 1), (lin.gather(0, pos) * others)[:, None]], 1)  # (k, 5, N), zero on the group
        through = _mm(col.transpose(0, 1), rhs)  # (2, 5, N)
        x = (_mm(inv, rhs) - _mm(coupling, through)) * others[:, :, None]
        # x (k, 5, N): the others' response to the group's values and their optimum, by the others' block⁻¹
        reduced = q[cols, cols] - _mm(q_sr, x[:, :GROUP])  # (4, 4, N)
        reduced_lin = lin[cols] - (q_sr * x[:, GROUP][None]).sum(1)  # (4, N)
        const = -(rhs[:, GROUP] * x[:, GROUP]).sum(0)  # (N,)
        f_patterns, v2 = pattern_losses(reduced_lin, pattern_systems(reduced))  # (6, N), (6, 2, N)
        f_best, best = f_patterns.min(0)  # min is far faster than argmin on CPU
        chosen, new_keep = patterns[best].T, keep_table[best].T  # (2, N) positions in the group, (4, N)
        chosen_values = v2.gather(0, best[None, None].expand(1, 2, N))[0]  # (2, N)
        group_values = (embed[best].permute(1, 2, 0) * chosen_values[:, None]).sum(0)  # (4, N)
        rest = -(x[:, GROUP] + (x[:, :GROUP] * group_values[None]).sum(1)) * others  # (k, N)
        new_values = torch.zeros_like(values).scatter_(0, pos, rest)
        new_values[cols] = group_values
        take = (f_best + const < f_cur) & valid[g].bool()
        values.copy_(torch.where(take, new_values, values))
        f_cur = torch.where(take, f_best + const, f_cur)
        moved = (take & (new_keep != keep[g]).any(0)).nonzero()[:, 0]  # the pairs whose kept block changes
        keep[g] = torch.where(take, new_keep, keep[g])
        if len(moved):
            _replace_group(inv, pos, g, moved, col[..., moved], coupling[..., moved], x[:, :GROUP, moved],
                           reduced[..., moved], chosen[:, moved], others)


def _replace_group(inv: Tensor, pos: Tensor, g: int, moved: Tensor, col: Tensor, coupling: Tensor, x: Tensor,
                   reduced: Tensor, chosen: Tensor, others: Tensor) -> None:
    """Swap group g's slots of the kept-block inverse inv (k, k, N) to its new kept positions `chosen` (2, M) in the
    `moved` pairs (M,), in place: the others' block⁻¹ by a rank-2 downdate, the new slots by a rank-2 update; col,
    coupling (k, 2, M), x (k, 4, M) and reduced (4, 4, M) are `_row_step`'s for those pairs."""
    k, M = inv.shape[0], len(moved)
    s = slice(2 * g, 2 * g + 2)
    eye2 = torch.eye(2, dtype=inv.dtype, device=inv.device)[..., None]
    w = (inv[..., moved] - _mm(coupling, col.transpose(0, 1))) * others[:, None] * others[None]
    y = x.gather(1, chosen[None].expand(k, 2, M))  # others' block⁻¹ Q̃[R, S'], (k, 2, M)
    y[s] -= eye2
    schur = reduced.gather(0, chosen[:, None].expand(2, GROUP, M)).gather(1, chosen[None].expand(2, 2, M))
    update = _mm(y, inverse_2x2(schur))  # (k, 2, M)
    inv[..., moved] = w + _mm(update, y.transpose(0, 1))
    pos[s, moved] = chosen + GROUP * g


def row_sweep(prob: Problem) -> None:
    """One row sweep over every group of the core (all layers); refreshes the problem. On the CPU the compiled
    kernel of `sweeps_cpu.py` runs it (unless FUSED_ON_CPU is off), elsewhere the batched operations below."""
    if FUSED_ON_CPU and prob.core.device.type == "cpu":
        from armor.optimizer.sweeps_cpu import row_sweep_grid  # numba, imported only where a CPU sweep runs

        grid = Grid.of(prob)
        row_sweep_grid(grid, RIDGE * torch.finfo(prob.core.dtype).eps, KEPT_BY_CODE)
        settle(prob)
        return
    pairs = Pairs.of(prob)
    b, G, _, N = pairs.core.shape
    unit, k = G * GROUP, 2 * G
    dt, dev = prob.core.dtype, prob.core.device
    q, p_diag = pairs.q, pairs.p_diag()
    q_diag = q.diagonal(dim1=0, dim2=1).T  # (U, N)
    live = q_diag > 0
    d_inv = torch.where(live, q_diag.rsqrt(), 0.0)
    q_unit = q * d_inv[:, None] * d_inv[None] + torch.eye(unit, dtype=dt, device=dev)[..., None] * (~live).to(dt)  # Q̃
    pos = kept_positions(pairs.mask.permute(1, 2, 0, 3), pairs.valid.permute(1, 0, 2))  # (k, b, N)
    ridge = RIDGE * torch.finfo(dt).eps * torch.eye(k, dtype=dt, device=dev)[..., None, None]
    chunk = max(1, CHUNK // (k * k * N))  # rows whose kept blocks are inverted together
    inverses = torch.cat([
        gauss_jordan_inverse(kept_block(q_unit[:, :, None].expand(-1, -1, len(rows), -1), pos[:, rows]) + ridge)
        for rows in torch.arange(b, device=dev).split(chunk)
    ], 2)  # (k, k, b, N)
    for r in range(b):
        live_r = live & (p_diag[r] > 0)  # (U, N)
        row_scale = torch.where(live_r, (p_diag[r] * q_diag).sqrt(), 0.0)  # D for this row
        row_inv = torch.where(live_r, row_scale.reciprocal(), 0.0)
        c0 = pairs.core[r].reshape(unit, N)
        lin = (pairs.gamma[r] - p_diag[r] * (q * c0[None]).sum(1)) * row_inv  # l̃ = D⁻¹ (Γ_r − P_rr Q c)
        before = c0 * row_scale  # c̃ = D c
        values, keep = before.clone(), pairs.mask[r].clone()
        _row_step(q_unit, lin, values, keep, pairs.valid[r], pos[:, r].clone(), inverses[:, :, r].clone())
        fell = quadratic(values, lin, q_unit) < quadratic(before, lin, q_unit)
        values = torch.where(fell, values, before)
        pairs.mask[r] = torch.where(fell, keep, pairs.mask[r])
        row = values * row_inv
        pairs.pass_on(r, row - c0)
        pairs.core[r] = row.view(G, GROUP, N)
    pairs.write_back(prob)
