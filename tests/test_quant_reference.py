"""The torch references against float64 math."""

import pytest
import torch
from quant_cases import DTYPES, make_x

from kernelkit.ops.quant import reference as ref


def _fp8_grid_error_bound(y: torch.Tensor) -> torch.Tensor:
    """Half an e4m3 ulp at |y| (3 mantissa bits; subnormal spacing 2**-9), for |y| <= 448."""
    exponent = torch.floor(torch.log2(y.abs().clamp(min=2.0**-6)))
    return torch.exp2(exponent - 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [16, 64, 128])
def test_group_fp8_matches_float64(dtype, group):
    x = make_x(37, 4 * group, dtype, seed=group)
    q, s = ref.per_token_group_quant_8bit_ref(x, group, torch.float8_e4m3fn)
    xg = x.double().view(37, 4, group)
    s64 = xg.abs().amax(-1).clamp(min=1e-10) / 448.0
    torch.testing.assert_close(s.double(), s64, rtol=2**-23, atol=0)
    y = xg / s.double().unsqueeze(-1)  # the exact quotient the fp32 division rounds
    err = (q.double().view(37, 4, group) - y).abs()
    assert (err <= _fp8_grid_error_bound(y) * (1 + 1e-6)).all()
    assert q.float().abs().max() <= 448


@pytest.mark.parametrize("dtype", DTYPES)
def test_group_int8_matches_float64(dtype):
    x = make_x(19, 256, dtype, seed=3)
    q, s = ref.per_token_group_quant_8bit_ref(x, 128, torch.int8)
    xg = x.double().view(19, 2, 128)
    s64 = xg.abs().amax(-1).clamp(min=1e-10) / 127.0
    torch.testing.assert_close(s.double(), s64, rtol=2**-23, atol=0)
    y = xg / s.double().unsqueeze(-1)
    assert ((q.double().view(19, 2, 128) - y).abs() <= 0.5 + 1e-6).all()
    assert q.abs().max() <= 127


def test_ue8m0_scales_are_next_power_of_two():
    x = make_x(16, 512, torch.bfloat16, seed=5)
    _, s = ref.per_token_group_quant_8bit_ref(x, 128, torch.float8_e4m3fn, scale_ue8m0=True)
    _, s_plain = ref.per_token_group_quant_8bit_ref(x, 128, torch.float8_e4m3fn)
    log2 = torch.log2(s.double())
    assert torch.equal(log2, torch.round(log2))
    assert (s >= s_plain).all() and (s < 2 * s_plain).all()
    exact = torch.tensor([0.25, 3.0, 2.0**-20, float("inf"), float("nan")])
    out = ref.round_up_pow2(exact)
    assert out[:3].tolist() == [0.25, 4.0, 2.0**-20] and out[3] == float("inf") and out[4].isnan()


def test_nan_and_inf_semantics():
    x = make_x(8, 256, torch.float32, seed=1, specials=True)
    q, s = ref.per_token_group_quant_8bit_ref(x, 128, torch.float8_e4m3fn)
    assert s[1, 0].isnan() and q[1, :128].float().isnan().all()  # NaN poisons its group only
    assert not s[1, 1].isnan() and not q[1, 128:].float().isnan().any()
    assert s[2, 0] == float("inf") and q[2, 5].float().isnan()  # inf / inf
    assert s[0, 0] == torch.tensor(1e-10, dtype=torch.float32) / 448  # eps clamp on an all-zero row
    qi, _ = ref.per_token_group_quant_8bit_ref(x, 128, torch.int8)
    assert (qi[1, :128] == 0).all()  # int8 NaN -> 0


def test_empty_batch_and_leading_dims():
    x = torch.randn(0, 256)
    q, s = ref.per_token_group_quant_8bit_ref(x, 128, torch.int8)
    assert q.shape == (0, 256) and s.shape == (0, 2)
    x3 = torch.randn(2, 3, 256)
    q3, s3 = ref.per_token_group_quant_8bit_ref(x3, 64, torch.float8_e4m3fn)
    assert q3.shape == (2, 3, 256) and s3.shape == (2, 3, 4)


def test_per_token_int8_matches_float64():
    x = make_x(11, 576, torch.bfloat16, seed=9)
    q, s = ref.per_token_quant_int8_ref(x)
    s64 = x.double().abs().amax(-1, keepdim=True) / 127.0
    torch.testing.assert_close(s.double(), s64, rtol=2**-23, atol=0)
    assert ((q.double() - x.double() / s.double()).abs() <= 0.5 + 1e-6).all()


def test_per_tensor_fp8_matches_float64():
    x = make_x(13, 320, torch.float16, seed=2)
    q, s = ref.per_tensor_quant_fp8_ref(x)
    torch.testing.assert_close(s.double(), x.double().abs().max().reshape(1) / 448.0, rtol=2**-23, atol=0)
    y = x.double() / s.double()
    assert ((q.double() - y).abs() <= _fp8_grid_error_bound(y) * (1 + 1e-6)).all()
    q_static, s_static = ref.per_tensor_quant_fp8_ref(x, torch.tensor([0.001]))
    assert s_static.item() == pytest.approx(0.001) and q_static.float().abs().max() == 448  # saturates
    q_empty, s_empty = ref.per_tensor_quant_fp8_ref(torch.empty(0, 8))
    assert q_empty.shape == (0, 8) and s_empty.item() == pytest.approx(1e-10 / 448)
