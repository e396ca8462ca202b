import pytest
import torch

from armor.sparsity import is_24, mask_24, zero_count


def test_mask_keeps_two_largest_of_each_group():
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.1, 0.3, 0.2, 0.0]])
    assert mask_24(scores).tolist() == [[False, True, True, False, False, True, True, False]]


def test_mask_is_24_and_keeps_half():
    mask = mask_24(torch.randn(16, 64))
    assert is_24(mask.float())
    assert mask.sum() == 16 * 32


def test_is_24_detects_a_dense_group():
    w = torch.zeros(2, 8)
    w[1, 4:7] = 1.0
    assert not is_24(w)
    assert zero_count(w) == 13


def test_d_in_not_divisible_by_four_is_rejected():
    with pytest.raises(ValueError, match="divisible by 4"):
        mask_24(torch.randn(3, 6))
