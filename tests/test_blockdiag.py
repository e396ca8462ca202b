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
