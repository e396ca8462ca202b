"""The core's sweeps as compiled CPU kernels: the same arithmetic as `row_sweep.py` and `sweep.group_sweep`, one pair
at a time.

On the CPU the batched sweeps spend their time in small operations: the row sweep in some sixty elementwise
operations per group, each streaming (k, k, N)-sized temporaries through memory; the group sweep in Python's overhead
on tiny (4, N) tensors, b · U / 4 groups one after another (4,096 at b = 128). The pairs are independent given A and B
(`pairs.py`), so these kernels (numba) run every row and group of one pair with its working set in cache, then the
next pair: the rows in order, each group in Gauss–Seidel order, Γ of the later rows updated from each row's change.
The row sweep keeps a row only where its exact quadratic fell; the group sweep changes a group only where its own
quadratic falls. They read the problem's own layout (`pairs.Grid`: Q once per column unit, the core and mask
changed in place in the core's dtype) and compute in float64, on one thread, compiled with floating-point
contraction and reassociation. Compiling them takes about 20 s once per core dtype; the machine code is cached on disk
(`_jit`), so a later process loads it in about a second.
"""

from collections.abc import Callable

import numpy as np
import torch
from numba import njit
from torch import Tensor

from armor.optimizer.pairs import Grid
from armor.optimizer.sparse_core import RIDGE as PATTERN_RIDGE
from armor.sparsity import PATTERNS

PATTERNS_NP = PATTERNS.numpy().astype(np.int64)  # (6, 2)
TINY = float(np.finfo(np.float64).tiny)
FAST_MATH = {"contract", "reassoc", "nsz", "arcp"}


def _jit(func: Callable) -> Callable:
    """numba's njit with fused multiply-adds and reordered sums allowed (not the no-NaN/no-infinity assumptions the
    kernels' comparisons rely on) and numpy's division semantics, its machine code cached on disk where numba finds a
    writable place (the package's __pycache__, NUMBA_CACHE_DIR, the user's cache), else compiled once per process."""
    try:
        return njit(cache=True, fastmath=FAST_MATH, error_model="numpy")(func)
    except RuntimeError:
        return njit(fastmath=FAST_MATH, error_model="numpy")(func)


@_jit
def _invert(a: np.ndarray) -> None:
    """Gauss–Jordan inverse of a symmetric positive definite k × k matrix in place, without pivoting."""
    k = a.shape[0]
    for j in range(k):
        pivot = 1.0 / a[j, j]
        a[j, j] = 1.0
        for c in range(k):
            a[j, c] *= pivot
        for i in range(k):
            if i != j:
                f = a[i, j]
                a[i, j] = 0.0
                for c in range(k):
                    a[i, c] -= f * a[j, c]


@_jit
def _matvec(m: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """out = m v for a small matrix m."""
    for i in range(m.shape[0]):
        acc = 0.0
        for j in range(m.shape[1]):
            acc += m[i, j] * v[j]
        out[i] = acc


@_jit
def _quadratic(v: np.ndarray, lin: np.ndarray, q: np.ndarray) -> float:
    """2 vᵀ lin + vᵀ q v."""
    total = 0.0
    for i in range(v.shape[0]):
        qv = 0.0
        for j in range(v.shape[0]):
            qv += q[i, j] * v[j]
        total += v[i] * (2.0 * lin[i] + qv)
    return total


@_jit
def _pass_on(qn: np.ndarray, p_n: np.ndarray, gamma_n: np.ndarray, r: int, t: int, moved: np.ndarray,
             change: np.ndarray) -> None:
    """Γ of the rows after r in column unit t, gamma_n (b, n_units, U), moved by row r's change of values (as
    `Pairs.pass_on`): Γ[r2] += P[r2, r] Q moved, `change` the work array for Q moved."""
    _matvec(qn, moved, change)  # Q is symmetric
    for r2 in range(r + 1, p_n.shape[0]):
        for u in range(change.shape[0]):
            gamma_n[r2, t, u] += p_n[r2, r] * change[u]


@_jit
def _best_pattern(reduced: np.ndarray, reduced_lin: np.ndarray, patterns: np.ndarray) -> tuple[float, int, float, float]:
    """The least loss over the six 2-of-4 patterns of 2 vᵀ lin + vᵀ reduced v, the first pattern reaching it and its
    two values (as `sparse_core.pattern_losses` and a min over its six)."""
    best_f, best, best_i, best_j = np.inf, 0, 0.0, 0.0
    for t in range(patterns.shape[0]):
        i, j = patterns[t, 0], patterns[t, 1]
        p, q, r = reduced[i, i], reduced[i, j], reduced[j, j]
        ridge = PATTERN_RIDGE * (p + r) + TINY
        pr, rr = p + ridge, r + ridge
        det = pr * rr - q * q
        scale = 1.0 / det if det > 0 else 0.0
        li, lj = reduced_lin[i], reduced_lin[j]
        vi = -(rr * scale * li - q * scale * lj)
        vj = -(-q * scale * li + pr * scale * lj)
        f = vi * (2 * li + p * vi + q * vj) + vj * (2 * lj + q * vi + r * vj)
        if f < best_f:
            best_f, best, best_i, best_j = f, t, vi, vj
    return best_f, best, best_i, best_j


@_jit
def _row_step(q: np.ndarray, lin: np.ndarray, values: np.ndarray, keep: np.ndarray, valid: np.ndarray,
              pos: np.ndarray, inv: np.ndarray, patterns: np.ndarray, work: tuple) -> float:
    """Every group of one row in Gauss–Seidel order, in place (as `row_sweep._row_step` for one pair): q (U, U),
    lin, values (U,), keep (G, 4), valid (G,), pos (k,) the kept slots' positions, inv (k, k) their block's inverse;
    work holds `_work_arrays(k)`. Returns the row's quadratic at its starting values."""
    G = keep.shape[0]
    k = 2 * G
    rhs, x, coupling, through, reduced, y, reduced_lin, group_values, col0, col1 = work
    f_start = f_cur = _quadratic(values, lin, q)
    for g in range(G):
        s0, c0 = 2 * g, 4 * g
        a00, a01, a10, a11 = inv[s0, s0], inv[s0, s0 + 1], inv[s0 + 1, s0], inv[s0 + 1, s0 + 1]
        det = a00 * a11 - a01 * a10
        i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
        for i in range(k):
            coupling[i, 0] = inv[i, s0] * i00 + inv[i, s0 + 1] * i10
            coupling[i, 1] = inv[i, s0] * i01 + inv[i, s0 + 1] * i11
            other = i // 2 != g
            for a in range(4):
                rhs[i, a] = q[c0 + a, pos[i]] if other else 0.0
            rhs[i, 4] = lin[pos[i]] if other else 0.0
        through[:] = 0.0
        for i in range(k):
            for c in range(5):
                through[0, c] += inv[i, s0] * rhs[i, c]
                through[1, c] += inv[i, s0 + 1] * rhs[i, c]
        x[:] = 0.0
        for i in range(k):
            if i // 2 == g:
                continue
            for j in range(k):
                a_ij = inv[i, j]
                for c in range(5):
                    x[i, c] += a_ij * rhs[j, c]
            for c in range(5):
                x[i, c] -= coupling[i, 0] * through[0, c] + coupling[i, 1] * through[1, c]
        const = 0.0
        for a in range(4):
            reduced_lin[a] = lin[c0 + a]
            for c in range(4):
                reduced[a, c] = q[c0 + a, c0 + c]
        for i in range(k):
            const -= rhs[i, 4] * x[i, 4]
            for a in range(4):
                r_ia = rhs[i, a]
                reduced_lin[a] -= r_ia * x[i, 4]
                for c in range(4):
                    reduced[a, c] -= r_ia * x[i, c]
        f_best, best, v0, v1 = _best_pattern(reduced, reduced_lin, patterns)
        if not (f_best + const < f_cur and valid[g]):
            continue
        chosen0, chosen1 = patterns[best, 0], patterns[best, 1]
        group_values[:] = 0.0
        group_values[chosen0], group_values[chosen1] = v0, v1
        values[:] = 0.0
        for i in range(k):
            if i // 2 != g:
                acc = x[i, 4]
                for a in range(4):
                    acc += x[i, a] * group_values[a]
                values[pos[i]] = -acc
        for a in range(4):
            values[c0 + a] = group_values[a]
        f_cur = f_best + const
        moved = not (keep[g, chosen0] and keep[g, chosen1])
        if moved:
            _replace_group(inv, pos, g, coupling, x, reduced, chosen0, chosen1, y, col0, col1)
        keep[g, :] = False
        keep[g, chosen0], keep[g, chosen1] = True, True
    return f_start


@_jit
def _replace_group(inv: np.ndarray, pos: np.ndarray, g: int, coupling: np.ndarray, x: np.ndarray, reduced: np.ndarray,
                   chosen0: int, chosen1: int, y: np.ndarray, col0: np.ndarray, col1: np.ndarray) -> None:
    """Swap group g's slots of the kept-block inverse inv (k, k) to its new kept positions (chosen0, chosen1), in
    place (as `row_sweep._replace_group` for one pair): the others' block⁻¹ by a rank-2 downdate, the new slots by a
    rank-2 update; y (k, 2), col0 and col1 (k,) are scratch."""
    k = inv.shape[0]
    s0 = 2 * g
    for i in range(k):  # y: the others' block⁻¹ Q̃[R, S'], minus the identity on the group's slots
        y[i, 0], y[i, 1] = x[i, chosen0], x[i, chosen1]
    y[s0, 0] -= 1.0
    y[s0 + 1, 1] -= 1.0
    p, q, r = reduced[chosen0, chosen0], reduced[chosen0, chosen1], reduced[chosen1, chosen1]
    det = p * r - q * q
    s00, s01, s11 = r / det, -q / det, p / det
    col0[:], col1[:] = inv[:, s0], inv[:, s0 + 1]
    for i in range(k):
        u0 = y[i, 0] * s00 + y[i, 1] * s01
        u1 = y[i, 0] * s01 + y[i, 1] * s11
        other_i = i // 2 != g
        for j in range(k):
            w = 0.0
            if other_i and j // 2 != g:
                w = inv[i, j] - coupling[i, 0] * col0[j] - coupling[i, 1] * col1[j]
            inv[i, j] = w + u0 * y[j, 0] + u1 * y[j, 1]
    pos[s0], pos[s0 + 1] = chosen0 + 4 * g, chosen1 + 4 * g


@_jit
def _work_arrays(k: int) -> tuple:
    """Scratch of `_row_step` for k kept slots: rhs, x (k, 5), coupling (k, 2), through (2, 5), reduced (4, 4),
    y (k, 2), reduced_lin, group_values (4,), col0, col1 (k,)."""
    return (np.empty((k, 5)), np.empty((k, 5)), np.empty((k, 2)), np.empty((2, 5)), np.empty((4, 4)), np.empty((k, 2)),
            np.empty(4), np.empty(4), np.empty(k), np.empty(k))


@_jit
def _unit_diagonal(qn: np.ndarray, q_diag: np.ndarray, q_unit: np.ndarray) -> None:
    """Q's diagonal into q_diag and Q̃ (unit diagonal, the identity on dead columns) into q_unit."""
    U = qn.shape[0]
    d_inv = np.empty(U)
    for u in range(U):
        q_diag[u] = qn[u, u]
        d_inv[u] = 1.0 / np.sqrt(q_diag[u]) if q_diag[u] > 0 else 0.0
    for u in range(U):
        for v in range(U):
            q_unit[u, v] = qn[u, v] * d_inv[u] * d_inv[v]
        if q_diag[u] <= 0:
            q_unit[u, u] = 1.0


@_jit
def _row_sweep_grid(q: np.ndarray, p: np.ndarray, gamma: np.ndarray, core: np.ndarray, mask: np.ndarray,
                    valid: np.ndarray, ridge: float, patterns: np.ndarray, kept_by_code: np.ndarray) -> None:
    """The row sweep of every pair, in place: q (L, n_units, U, U), p (L, n_out, b, b) and gamma
    (L, n_out, b, n_units, U) in float64, core as gamma in the problem's dtype, mask (bool, as the core), valid
    (n_out, n_units, b, G); ridge on the kept blocks' unit diagonal, kept_by_code as row_sweep.KEPT_BY_CODE."""
    L, n_out, b, n_units, U = core.shape
    G, k = U // 4, U // 2
    q_unit, inv = np.empty((U, U)), np.empty((k, k))
    q_diag, row_scale, row_inv = np.empty(U), np.empty(U), np.empty(U)
    c0, lin, before, values, change = np.empty(U), np.empty(U), np.empty(U), np.empty(U), np.empty(U)
    keep, pos = np.empty((G, 4), dtype=np.bool_), np.empty(k, dtype=np.int64)
    work = _work_arrays(k)
    for l in range(L):
        for t in range(n_units):
            qn = q[l, t]
            _unit_diagonal(qn, q_diag, q_unit)
            for o in range(n_out):
                for r in range(b):
                    p_rr = p[l, o, r, r]
                    _matvec(qn, core[l, o, r, t], lin)
                    for u in range(U):
                        row_scale[u] = np.sqrt(p_rr * q_diag[u]) if q_diag[u] > 0 and p_rr > 0 else 0.0
                        row_inv[u] = 1.0 / row_scale[u] if row_scale[u] > 0 else 0.0
                        c0[u] = core[l, o, r, t, u]
                        lin[u] = (gamma[l, o, r, t, u] - p_rr * lin[u]) * row_inv[u]
                        before[u] = c0[u] * row_scale[u]
                        values[u] = before[u]
                        keep[u // 4, u % 4] = mask[l, o, r, t, u]
                    for g in range(G):  # as row_sweep.kept_positions
                        code = 0
                        if valid[o, t, r, g]:
                            for a in range(4):
                                code += keep[g, a] << a
                        pos[2 * g], pos[2 * g + 1] = 4 * g + kept_by_code[code, 0], 4 * g + kept_by_code[code, 1]
                    for i in range(k):
                        for j in range(k):
                            inv[i, j] = q_unit[pos[i], pos[j]]
                        inv[i, i] += ridge
                    _invert(inv)
                    f_before = _row_step(q_unit, lin, values, keep, valid[o, t, r], pos, inv, patterns, work)
                    fell = _quadratic(values, lin, q_unit) < f_before
                    for u in range(U):
                        if fell:
                            mask[l, o, r, t, u] = keep[u // 4, u % 4]
                        else:
                            values[u] = before[u]
                        core[l, o, r, t, u] = values[u] * row_inv[u]
                        c0[u] = core[l, o, r, t, u] - c0[u]
                    _pass_on(qn, p[l, o], gamma[l, o], r, t, c0, change)


@_jit
def _group_sweep_grid(q: np.ndarray, p: np.ndarray, gamma: np.ndarray, core: np.ndarray, mask: np.ndarray,
                      patterns: np.ndarray) -> None:
    """The group sweep of every pair, in place (as `sweep.group_sweep` for one pair at a time): q (L, n_units, U, U),
    p (L, n_out, b, b) and gamma (L, n_out, b, n_units, U) in float64, core as gamma in the problem's dtype, mask
    (bool, as the core)."""
    L, n_out, b, n_units, U = core.shape
    row, moved, change = np.empty(U), np.empty(U), np.empty(U)
    quad, lin, current, values, delta = np.empty((4, 4)), np.empty(4), np.empty(4), np.empty(4), np.empty(4)
    for l in range(L):
        for t in range(n_units):
            qn = q[l, t]
            for o in range(n_out):
                for r in range(b):
                    p_rr = p[l, o, r, r]
                    row[:] = gamma[l, o, r, t]
                    moved[:] = 0.0
                    for c0 in range(0, U, 4):
                        f_current = 0.0
                        for a in range(4):
                            current[a] = core[l, o, r, t, c0 + a]
                        for a in range(4):
                            quad_c = 0.0
                            for c in range(4):
                                quad[a, c] = p_rr * qn[c0 + a, c0 + c]
                                quad_c += quad[a, c] * current[c]
                            lin[a] = row[c0 + a] - quad_c
                            f_current += current[a] * (2.0 * lin[a] + quad_c)
                        f_best, best, v0, v1 = _best_pattern(quad, lin, patterns)
                        if not f_best < f_current:
                            continue
                        values[:] = 0.0
                        values[patterns[best, 0]], values[patterns[best, 1]] = v0, v1
                        for a in range(4):
                            delta[a] = values[a] - current[a]
                            core[l, o, r, t, c0 + a] = values[a]
                            mask[l, o, r, t, c0 + a] = a == patterns[best, 0] or a == patterns[best, 1]
                            moved[c0 + a] = delta[a]
                        for u in range(U):
                            acc = 0.0
                            for a in range(4):
                                acc += delta[a] * qn[c0 + a, u]
                            row[u] += p_rr * acc
                    _pass_on(qn, p[l, o], gamma[l, o], r, t, moved, change)


def _float64(x: Tensor) -> np.ndarray:
    """x as a contiguous float64 numpy array, sharing x's memory where x already is one."""
    return x.to(torch.float64).contiguous().numpy()


def _on_grid(kernel: Callable, grid: Grid, *extra: object) -> None:
    """Run a sweep kernel on every pair of the grid, its core (in the problem's dtype) and mask updated in place;
    `extra` follows the mask in the kernel's arguments."""
    kernel(_float64(grid.q), _float64(grid.p), _float64(grid.gamma), grid.core.numpy(), grid.mask.numpy(), *extra)


def row_sweep_grid(grid: Grid, ridge: float, kept_by_code: Tensor) -> None:
    """The row sweep of every pair on the CPU, the grid's core and mask in place; ridge and kept_by_code (16, 2)
    those of `row_sweep`."""
    _on_grid(_row_sweep_grid, grid, grid.valid.numpy(), ridge, PATTERNS_NP, kept_by_code.numpy().astype(np.int64))


def group_sweep_grid(grid: Grid) -> None:
    """The group sweep of every pair on the CPU, the grid's core and mask in place."""
    _on_grid(_group_sweep_grid, grid, PATTERNS_NP)
