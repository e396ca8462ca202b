"""On a CUDA GPU with PyTorch's 2:4 kernels (compute capability >= 8.0; skipped elsewhere): ArmorLinear on the
semi-structured kernels against the plain product, and the layer benchmark's rows."""

import pytest
import torch

from armor.inference.armor_linear import ArmorLinear, semi_structured_supported
from armor.inference.speed import layer_speed
from armor.optimizer import blockdiag as bd
from armor.sparsity import mask_24

CUDA = torch.device("cuda")
pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and semi_structured_supported(CUDA, torch.float16)), reason="needs a CUDA GPU of compute capability >= 8.0"
)


def _layer(d_out: int, d_in: int, b: int, bias: bool) -> tuple[ArmorLinear, torch.Tensor, torch.Tensor | None]:
    """A float32 layer with random wrappers (b = 0: none), its dense reference weight and its bias."""
    g = torch.Generator().manual_seed(0)
    core = torch.randn(d_out, d_in, generator=g) * mask_24(torch.randn(d_out, d_in, generator=g))
    bias_values = torch.randn(d_out, generator=g) if bias else None
    if not b:
        return ArmorLinear.from_core(core, bias=bias_values), core, bias_values
    a, bb = (bd.identity(lay)[0] + torch.randn(lay.n_blocks, b, b, generator=g) / b for lay in (bd.layout(d_out, b), bd.layout(d_in, b, 4)))
    reference = torch.block_diag(*a)[:d_out, :d_out] @ core @ torch.block_diag(*bb)[:d_in, :d_in]
    return ArmorLinear.from_core(core, a, bb, bias_values), reference, bias_values


@pytest.mark.parametrize(("d_out", "d_in", "b"), [(576, 576, 128), (1536, 576, 64), (576, 1536, 0), (256, 192, 32)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semi_structured_layer_matches_the_plain_product(d_out, d_in, b, dtype):
    """Ragged wrapper blocks (576 = 4.5 blocks of 128), strided 3-D inputs, odd token counts, a bias, many calls."""
    layer, reference, bias = _layer(d_out, d_in, b, bias=True)
    layer.to(CUDA, dtype)
    assert layer.kernel() == "semi-structured"
    reference, bias = reference.to(CUDA), bias.to(CUDA)
    g = torch.Generator(device=CUDA).manual_seed(1)
    for tokens in (1, 7, 64, 129, 3, 16, 1, 200, 33, 64):
        x = torch.randn(d_in, tokens, 2, generator=g, device=CUDA).permute(2, 1, 0)  # (2, tokens, d_in), non-contiguous
        expected = x @ reference.T + bias
        got = layer(x.to(dtype)).float()
        assert got.shape == expected.shape
        assert (got - expected).norm() <= 2e-2 * expected.norm(), tokens


def test_a_shape_the_2_4_kernels_do_not_take_falls_back_to_a_folded_matmul(caplog):
    layer, reference, _ = _layer(48, 40, 8, bias=False)
    layer.to(CUDA, torch.float16)
    assert layer.kernel() == "folded" and "keeping a dense core for a 48x40 layer" in caplog.text
    x = torch.randn(5, 40, device=CUDA)
    assert torch.allclose(layer(x.half()).float(), x @ reference.to(CUDA).T, rtol=1e-2, atol=1e-2)


def test_layer_benchmark_runs_the_2_4_kernels_in_half_precision():
    rows = layer_speed({"small": [(512, 256)]}, [64], [1, 128], torch.float16, CUDA, rounds=2)
    assert len(rows) == 3 * 2
    assert {row["variant"]: row["kernel"] for row in rows} == {"dense": "dense", "2:4": "semi-structured", "armor_b64": "semi-structured"}
    assert all(row["sparse_backend"] in ("cusparselt", "cutlass") and row["gpus"] >= 1 and row["ms"] > 0 for row in rows)
