"""RMSNorm / SiLU-and-mul fused with FP8 quantization: bit for bit the unfused Triton op followed by the quantizer
(Triton's interpreter without a GPU), the references on CPU, argument checks, torch.compile."""

import pytest
import torch

from kernelkit.ops import per_token_group_quant_fp8
from kernelkit.ops.layers import reference, triton_impl
from kernelkit.ops.layers.quant_ops import rms_norm_quant_fp8, silu_and_mul_quant_fp8
from kernelkit.ops.quant.reference import per_token_group_quant_8bit_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def _bits(q):
    """e4m3 bit patterns with the sign of NaN (0x7F / 0xFF) dropped: it follows the platform's arithmetic (numpy
    in Triton's interpreter makes negative NaNs from inf - inf, torch's CPU ops positive ones)."""
    bits = q.cpu().view(torch.uint8)
    return torch.where(bits & 0x7F == 0x7F, 0x7F, bits)


def _assert_same_quant(q, s, q_ref, s_ref):
    assert torch.equal(_bits(q), _bits(q_ref))
    torch.testing.assert_close(s.cpu(), s_ref.cpu(), rtol=0, atol=0, equal_nan=True)


def _with_specials(x):
    if x.shape[0] >= 3:
        x[1, 3], x[2, -1] = float("nan"), float("inf")
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t, n, group", [(0, 256, 128), (1, 4096, 128), (5, 384, 128), (4, 192, 64)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_quant_kernel_equals_rms_norm_then_quant(dtype, t, n, group, with_residual):
    g = torch.Generator().manual_seed(n + t)
    x = _with_specials(torch.randn(t, n, generator=g) * 3).to(dtype).to(DEVICE)
    w = torch.randn(n, generator=g).to(dtype).to(DEVICE)
    res = torch.randn(t, n, generator=g).to(dtype).to(DEVICE) if with_residual else None
    normed, summed = torch.empty_like(x), torch.empty_like(x)
    triton_impl.rms_norm(x, w, 1e-5, res, normed, summed if with_residual else None)
    q_ref, s_ref = per_token_group_quant_8bit_ref(normed, group, torch.float8_e4m3fn)
    q = torch.empty(t, n, dtype=torch.float8_e4m3fn, device=DEVICE)
    s_t = torch.empty(n // group, t, device=DEVICE)
    res_out = torch.empty_like(x) if with_residual else None
    triton_impl.rms_norm_quant_fp8(x, w, 1e-5, res, group, 1e-10, q, s_t.t(), res_out)
    _assert_same_quant(q, s_t.t(), q_ref, s_ref)
    if with_residual:
        torch.testing.assert_close(res_out, summed, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t, d, group", [(0, 128, 128), (3, 1536, 128), (2, 2176, 128), (5, 64, 32)])
def test_silu_and_mul_quant_kernel_equals_silu_and_mul_then_quant(dtype, t, d, group):
    x = _with_specials(torch.randn(t, 2 * d, generator=torch.Generator().manual_seed(d)) * 4).to(dtype).to(DEVICE)
    act = torch.empty(t, d, dtype=dtype, device=DEVICE)
    triton_impl.silu_and_mul(x, act)
    q_ref, s_ref = per_token_group_quant_8bit_ref(act, group, torch.float8_e4m3fn)
    q = torch.empty(t, d, dtype=torch.float8_e4m3fn, device=DEVICE)
    s_t = torch.empty(d // group, t, device=DEVICE)
    triton_impl.silu_and_mul_quant_fp8(x, group, 1e-10, q, s_t.t())
    _assert_same_quant(q, s_t.t(), q_ref, s_ref)


def test_ops_match_references_check_arguments_and_compile():
    g = torch.Generator().manual_seed(1)
    x, w, r = torch.randn(6, 256, generator=g), torch.randn(256, generator=g), torch.randn(6, 256, generator=g)
    q, s, summed = rms_norm_quant_fp8(x, w, 1e-5, r)
    q_ref, s_ref, sum_ref = reference.rms_norm_quant_fp8_ref(x, w, 1e-5, r, 128, 1e-10)
    _assert_same_quant(q, s, q_ref, s_ref)
    assert torch.equal(summed, sum_ref) and s.stride() == (1, 6)  # column-major, as Fp8BlockLinear passes it
    normed = reference.rms_norm_ref(x, w, 1e-5, r)[0]
    _assert_same_quant(q, s, *per_token_group_quant_fp8(normed, 128, column_major_scales=True))
    q2, s2 = silu_and_mul_quant_fp8(r)
    _assert_same_quant(q2, s2, *reference.silu_and_mul_quant_fp8_ref(r, 128, 1e-10))
    with pytest.raises(ValueError, match="divide 100"):
        rms_norm_quant_fp8(torch.randn(2, 100), torch.ones(100), 1e-5)
    with pytest.raises(ValueError, match="2d"):
        silu_and_mul_quant_fp8(torch.randn(2, 3))
    with pytest.raises(ValueError, match="quant_eps"):
        silu_and_mul_quant_fp8(r, 128, 0.0)
    compiled = torch.compile(lambda a: silu_and_mul_quant_fp8(a)[1] * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(r), s2 * 2)
