"""The Gauss–Newton normal equations (JᵀHJ + λ diag JᵀHJ) δ = −JᵀH r at one point, in Gram form.

With Y = C·B, X = A·C, P = AᵀA, Q = B H Bᵀ, G = Y H Yᵀ (per row block) and K = XᵀX (per column block), and for a
direction (dA, dB, dC) S = Aᵀ dA, R = dB H Bᵀ, Z = dC·Q + C·R and V = P·dC + S·C, the product JᵀHJ δ is

    on A:  dA G + A · Σ_q Z_pq C_pqᵀ,    on B:  (Σ_p C_pqᵀ V_pq · B_q + K dB) H,    on C:  (V·Q + P·C·R) ⊙ M,

eight block products and two blocked transposes, with h folded into Q and R instead of a pass over the residual.
The core's vectors live in column blocks (L, n_in, P_out, b), where right products need no copy. The preconditioner
is exact on A's and B's blocks (every row of A_p has Hessian G_p, every column k of B_q has h_k K_q); on the core it
is the diagonal, or, for the layers flagged row-exact, exact on each row's kept values in each column block, whose
Hessian is P_ii · Q_q restricted to them: a (b/2) × (b/2) block per row and column block, b/4 times the core's size.
"""

import torch
from torch import Tensor

from armor.optimizer import blockdiag as bd
from armor.optimizer.monotone import per_layer
from armor.optimizer.problem import Problem

PRECONDITIONER_FLOOR = 1e-30  # keeps a zero diagonal entry (padding, dead inputs) from dividing by zero
BLOCK_RIDGE = 1e-6  # relative to a block's largest diagonal entry: bounds the inverse of a near-singular Gram

Point = list[Tensor]  # A's blocks (L, n_out, b, b), B's blocks (L, n_in, b, b), the core in column blocks


def dot(xs: Point, ys: Point) -> Tensor:
    """Per-layer inner product (L,) of two points, summed in their dtype and returned in float64."""
    return torch.stack([
        sum(torch.dot(x[i].reshape(-1), y[i].reshape(-1)) for x, y in zip(xs, ys)) for i in range(xs[0].shape[0])
    ]).double()


def _damp_(gram: Tensor, damping: Tensor) -> Tensor:
    """G + λ diag G + ridge, in place, for symmetric PSD blocks (L, ..., b, b), the ridge relative to the damped block's
    largest diagonal entry; a zero diagonal entry gets a unit diagonal, so padded indices stay decoupled."""
    diag = gram.diagonal(dim1=-2, dim2=-1)
    damped = diag * (1 + per_layer(damping, gram)[..., 0])  # of G + λ diag G
    diag.copy_(damped + BLOCK_RIDGE * damped.amax(-1, keepdim=True) + (damped == 0).to(gram.dtype))
    return gram


def _block_inverse(gram: Tensor, damping: Tensor) -> Tensor:
    """(G + λ diag G + ridge)⁻¹ for symmetric PSD blocks (L, n, b, b), in float64."""
    return torch.linalg.inv(_damp_(gram.to(torch.float64, copy=True), damping)).to(gram.dtype)


def _kept_inverse(q: Tensor, p: Tensor, mask_col: Tensor, damping: Tensor) -> tuple[Tensor, Tensor]:
    """The kept values' positions in each row's column block (L, n_in, P_out, k) and the inverse of their damped
    Hessian block P_ii · Q_q[kept, kept] (L, n_in, P_out, k, k), by Cholesky in the core's dtype (L⁻ᵀ L⁻¹ from the
    factor's triangular inverse); a block whose factorisation fails falls back to its diagonal."""
    L, n_in, p_out, b = mask_col.shape
    k = int(mask_col.sum(-1).amax())  # b/2 where b is a multiple of 4
    kept = torch.argsort(mask_col, dim=-1, descending=True, stable=True)[..., :k]
    base = (torch.arange(L * n_in, device=q.device) * b * b).view(L, n_in, 1, 1, 1)
    damped = torch.take(q, base + (kept * b)[..., :, None] + kept[..., None, :])  # Q_q[kept, kept], (L, n_in, P_out, k, k)
    damped.mul_(p.diagonal(dim1=-2, dim2=-1).reshape(L, 1, p_out, 1, 1))
    m = mask_col.gather(-1, kept)  # 0 where a row's block holds fewer than k kept values (padding)
    if not m.all():
        damped.mul_(m[..., :, None]).mul_(m[..., None, :])
    _damp_(damped, damping)
    factor, failed = torch.linalg.cholesky_ex(damped)
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    factor_inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)  # L⁻¹
    inverse = factor_inverse.transpose(-1, -2) @ factor_inverse
    if failed.any():
        inverse[failed > 0] = torch.diag_embed(damped[failed > 0].diagonal(dim1=-2, dim2=-1).reciprocal())
    return kept, inverse


class NormalEquations:
    """The damped Gauss–Newton system of a problem at its current point, for L layers with damping λ (L,), the core
    preconditioner row-exact for the layers flagged in `row_core` (L,) bool and diagonal for the others."""

    def __init__(self, prob: Problem, damping: Tensor, row_core: Tensor) -> None:
        L, n_out, b, n_in, _ = prob.core.shape
        self.prob, self.n_out = prob, n_out
        self.row_layers = row_core.nonzero().flatten()
        self.h_col = prob.h.view(L, n_in, 1, b)  # h by column block: scales the columns of B_q and of column blocks
        self.c_col = bd.columns(prob.core)  # C, (L, n_in, P_out, b)
        self.c_tiles_t = self.c_col.view(-1, b, b).transpose(1, 2).contiguous()  # every tile C_pqᵀ
        self.mask_col = bd.columns(prob.mask.to(prob.core.dtype))
        self.x_col = bd.columns(bd.left(prob.a, prob.core))  # X = A·C
        self.p = prob.a.transpose(-1, -2) @ prob.a  # (L, n_out, b, b)
        self.q = (prob.b * self.h_col) @ prob.b.transpose(-1, -2)  # (L, n_in, b, b)
        self.pc_col = bd.columns(bd.left(self.p, prob.core))
        gram_a = bd.row_gram(prob.cb * prob.h_grid, prob.cb)  # G, (L, n_out, b, b)
        gram_b = bd.column_gram(self.x_col, self.x_col)  # K, (L, n_in, b, b)
        self.gram_a, self.gram_b = gram_a, gram_b
        p_diag, q_diag = self.p.diagonal(dim1=-2, dim2=-1), self.q.diagonal(dim1=-2, dim2=-1)
        diagonal = [
            gram_a.diagonal(dim1=-2, dim2=-1)[:, :, None, :].expand(prob.a.shape),
            gram_b.diagonal(dim1=-2, dim2=-1)[..., None] * self.h_col,
            p_diag.reshape(L, 1, n_out * b, 1) * q_diag[:, :, None, :] * self.mask_col,
        ]
        self.damped = [per_layer(damping, d) * d for d in diagonal]  # λ diag JᵀHJ
        self.inverse_a, self.inverse_b = _block_inverse(gram_a, damping), _block_inverse(gram_b, damping)
        self.h_inverse = torch.where(self.h_col > 0, self.h_col.reciprocal(), 0.0)
        self.inverse_c = (diagonal[2] + self.damped[2]).add_(PRECONDITIONER_FLOOR).reciprocal_()
        if len(self.row_layers):
            rows = self.row_layers
            self.kept, self.inverse_kept = _kept_inverse(self.q[rows], self.p[rows], self.mask_col[rows], damping[rows])

    def rhs(self) -> Point:
        """−JᵀH r at the current residual r."""
        prob = self.prob
        u = prob.resid * prob.h_grid  # r H, grid
        u_col = bd.columns(u)
        ubt = bd.from_columns(bd.right_columns(u_col, prob.b.transpose(-1, -2)), self.n_out)  # U Bᵀ
        core = bd.left(prob.a.transpose(-1, -2), ubt).mul_(prob.mask)
        return [-bd.row_gram(u, prob.cb), -bd.column_gram(self.x_col, u_col), bd.columns(core).neg_()]

    def apply(self, direction: Point) -> Point:
        """(JᵀHJ + λ diag JᵀHJ) δ for δ = (dA, dB, dC), dC in column blocks."""
        prob = self.prob
        da, db, dc = direction
        L, n_in, p_out, b = dc.shape
        s = prob.a.transpose(-1, -2) @ da  # Aᵀ dA, (L, n_out, b, b)
        r = (db * self.h_col) @ prob.b.transpose(-1, -2)  # dB H Bᵀ, (L, n_in, b, b)
        z = torch.bmm(dc.view(-1, p_out, b), self.q.view(-1, b, b))
        z.baddbmm_(self.c_col.view(-1, p_out, b), r.view(-1, b, b))  # Z = dC·Q + C·R, column blocks
        v = bd.left(self.p, bd.from_columns(dc, self.n_out))
        v.view(L * self.n_out, b, -1).baddbmm_(s.view(-1, b, b), prob.core.view(L * self.n_out, b, -1))  # V = P·dC + S·C
        v_col = bd.columns(v)
        z_c = torch.bmm(z.view(-1, b, b), self.c_tiles_t).view(L, n_in, self.n_out, b, b).sum(1)  # Σ_q Z_pq C_pqᵀ
        on_a = (da @ self.gram_a).add_(prob.a @ z_c).addcmul_(self.damped[0], da)
        on_b = (bd.column_gram(self.c_col, v_col) @ prob.b).add_(self.gram_b @ db).mul_(self.h_col).addcmul_(self.damped[1], db)
        on_c = torch.bmm(v_col.view(-1, p_out, b), self.q.view(-1, b, b))
        on_c.baddbmm_(self.pc_col.view(-1, p_out, b), r.view(-1, b, b))
        on_c = on_c.view(dc.shape).mul_(self.mask_col).addcmul_(self.damped[2], dc)
        return [on_a, on_b, on_c]

    def precondition(self, residual: Point) -> Point:
        """M⁻¹ r: the exact blocks of A and B; the core's diagonal, or its exact kept blocks per row in the row-exact
        layers."""
        r_a, r_b, r_c = residual
        z_c = r_c * self.inverse_c
        if len(self.row_layers):
            rows = self.row_layers if len(self.row_layers) < r_c.shape[0] else slice(None)  # a slice: no copies
            r_kept = r_c[rows].gather(-1, self.kept)  # (R, n_in, P_out, k)
            k = r_kept.shape[-1]
            z_kept = torch.bmm(r_kept.view(-1, 1, k), self.inverse_kept.view(-1, k, k)).view(r_kept.shape)  # rᵀM⁻¹ = (M⁻¹r)ᵀ
            z_c[rows] = torch.zeros_like(z_c[rows]).scatter_(-1, self.kept, z_kept)
        return [r_a @ self.inverse_a, (self.inverse_b @ r_b).mul_(self.h_inverse), z_c]

    def move(self, step: Point) -> None:
        """Add a step to A, B and the kept core values, and refresh the problem."""
        prob = self.prob
        prob.a.add_(step[0])
        prob.b.add_(step[1])
        prob.core.add_(bd.from_columns(step[2], self.n_out)).mul_(prob.mask)
        prob.refresh()
