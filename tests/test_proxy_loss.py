import torch

from armor.normalize import denormalize, normalize
from armor.proxy_loss import proxy_loss, relative_loss


def test_normalize_round_trip_and_unit_rows():
    w = torch.randn(12, 20, dtype=torch.float64)
    w_bar, r_in, r_out = normalize(w)
    assert torch.allclose(denormalize(w_bar, r_in, r_out), w)
    assert torch.allclose(w_bar.norm(dim=1), torch.ones(12, dtype=torch.float64), atol=1e-4)


def test_proxy_loss_is_zero_for_exact_and_one_for_zero():
    w_bar, h = torch.randn(8, 16), torch.rand(16)
    assert proxy_loss(w_bar, w_bar, h) == 0
    assert torch.isclose(proxy_loss(torch.zeros_like(w_bar), w_bar, h), torch.tensor(1.0))


def test_relative_loss_matches_normalised_space():
    w, h = torch.randn(8, 16, dtype=torch.float64), torch.rand(16, dtype=torch.float64)
    mask = torch.rand(8, 16) > 0.5
    w_bar, _, _ = normalize(w)
    assert abs(relative_loss(w, w * mask, h) - float(proxy_loss(w_bar * mask, w_bar, h))) < 1e-9
