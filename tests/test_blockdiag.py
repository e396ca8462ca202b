import pytest
import torch

from armor.optimizer import blockdiag as bd


def _random_blocks(lay: bd.Layout) -> torch.Tensor:
    """Random blocks (1, n, b, b), zero on padded indices like the optimiser's."""
    real = bd.identity(lay, dtype=torch.float64).diagonal(dim1=-2, dim2=-1)  # (1, n, b)
    return torch.randn(1, lay.n_blocks, lay.b, lay.b, dtype=torch.float64) * real[..., :, None] * real[..., None, :]


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(8, 12, 4), (576, 192, 128), (10, 12, 1), (9, 20, 6)])
def test_grid_products_match_dense_block_diagonal(d_out, d_in, b):
    rows, cols = bd.layout(d_out, b), bd.layout(d_in, b, 4)
    a, bb = _random_blocks(rows), _random_blocks(cols)
    c = torch.randn(1, d_out, d_in, dtype=torch.float64)
    grid = bd.grid(bd.pad(c, rows, cols), rows, cols)
    out = bd.unpad(bd.right(bd.left(a, grid), bb).reshape(1, rows.padded, cols.padded), rows, cols)
    expected = bd.dense(a[0], rows) @ c[0] @ bd.dense(bb[0], cols)
    assert torch.allclose(out[0], expected)


def test_ragged_layout_pads_to_whole_blocks_and_groups():
    lay = bd.layout(576, 128, 4)
    assert (lay.padded, lay.n_blocks) == (640, 5)
    assert bd.layout(36, 6, 4).padded == 36 and bd.layout(36, 6, 4).multiple == 12
    eye = bd.identity(lay)
    assert eye.shape == (1, 5, 128, 128)
    assert eye.sum() == 576  # identity on real indices, zero on padding


def test_merge_builds_larger_diagonal_blocks():
    blocks = torch.randn(1, 8, 1, 1)
    merged = bd.merge(blocks, 4)
    assert merged.shape == (1, 2, 4, 4)
    assert torch.equal(torch.block_diag(*merged[0]), torch.diag(blocks.flatten()))


def test_block_size_must_be_positive():
    with pytest.raises(ValueError, match="block size"):
        bd.layout(8, 0)


def _plain_row_gram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """X_p Y_pᵀ by a loop over layers and row blocks, on the padded matrices."""
    L, n_out, b, n_in, _ = x.shape
    out = torch.zeros(L, n_out, b, b, dtype=x.dtype)
    for layer in range(L):
        for p in range(n_out):
            out[layer, p] = x[layer, p].reshape(b, -1) @ y[layer, p].reshape(b, -1).T
    return out


def _plain_column_gram(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """X_qᵀ Y_q by a loop over layers and column blocks, on the padded matrices."""
    L, n_out, b, n_in, _ = x.shape
    xm, ym = x.reshape(L, n_out * b, n_in * b), y.reshape(L, n_out * b, n_in * b)
    out = torch.zeros(L, n_in, b, b, dtype=x.dtype)
    for layer in range(L):
        for q in range(n_in):
            cols = slice(q * b, (q + 1) * b)
            out[layer, q] = xm[layer, :, cols].T @ ym[layer, :, cols]
    return out


@pytest.mark.parametrize(("L", "n_out", "n_in", "b"), [(1, 3, 5, 4), (2, 1, 7, 6), (3, 4, 2, 1)])
def test_row_and_column_products_match_plain_loops_on_strided_inputs(L, n_out, n_in, b):
    g = torch.Generator().manual_seed(n_out * 10 + n_in)
    x = torch.randn(L, n_in, b, n_out, b, generator=g, dtype=torch.float64).permute(0, 3, 4, 1, 2)  # non-contiguous grid
    y = torch.randn(L, n_out, b, n_in, b, generator=g, dtype=torch.float64)
    a = torch.randn(L, n_out, b, b, generator=g, dtype=torch.float64).transpose(-1, -2)  # Aᵀ as a strided view
    bb = torch.randn(L, n_in, b, b, generator=g, dtype=torch.float64)
    dense_a = torch.stack([torch.block_diag(*a[i]) for i in range(L)])
    dense_b = torch.stack([torch.block_diag(*bb[i]) for i in range(L)])
    xm = x.reshape(L, n_out * b, n_in * b)
    assert torch.allclose(bd.left(a, x).reshape(xm.shape), dense_a @ xm)
    assert torch.allclose(bd.right(x, bb).reshape(xm.shape), xm @ dense_b)
    assert torch.equal(bd.from_columns(bd.columns(x), n_out), x)
    assert torch.allclose(bd.right_columns(bd.columns(x), bb), bd.columns(bd.right(x, bb)))
    assert torch.allclose(bd.row_gram(x, y), _plain_row_gram(x, y))
    assert torch.allclose(bd.column_gram(bd.columns(x), bd.columns(y)), _plain_column_gram(x, y))
    for out in (bd.left(a, x), bd.right(x, bb), bd.columns(x), bd.row_gram(x, y)):
        assert out.is_contiguous()
