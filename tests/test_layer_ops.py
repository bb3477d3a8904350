"""Fused layer ops (RMSNorm with residual add, SiLU-and-mul, rotary): the Triton kernels (interpreter without a
GPU) against the torch references, bit for bit where the rounding allows, plus argument checks and
torch.compile."""

import pytest
import torch

from kernelkit.ops.layers import reference, triton_impl
from kernelkit.ops.layers.ops import rms_norm, rotary, silu_and_mul

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t, n", [(0, 64), (1, 576), (7, 4096), (5, 100)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_kernel_matches_reference(dtype, t, n, with_residual):
    g = torch.Generator().manual_seed(n)
    x, w = torch.randn(t, n, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype)
    res = torch.randn(t, n, generator=g).to(dtype) if with_residual else None
    ref, ref_sum = reference.rms_norm_ref(x, w, 1e-5, res)
    out, out_sum = torch.empty_like(x, device=DEVICE), torch.empty_like(x, device=DEVICE)
    triton_impl.rms_norm(x.to(DEVICE), w.to(DEVICE), 1e-5, None if res is None else res.to(DEVICE), out,
                         out_sum if with_residual else None)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)
    if with_residual:
        assert torch.equal(out_sum.cpu(), ref_sum)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t, d", [(0, 16), (3, 1536), (4, 3000)])
def test_silu_and_mul_kernel_matches_reference(dtype, t, d):
    x = torch.randn(t, 2 * d, generator=torch.Generator().manual_seed(d)).to(dtype)
    out = torch.empty(t, d, dtype=dtype, device=DEVICE)
    triton_impl.silu_and_mul(x.to(DEVICE), out)
    torch.testing.assert_close(out.cpu(), reference.silu_and_mul_ref(x), rtol=1e-5 if dtype == torch.float32
                               else 1e-2, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_stays_nan(dtype):
    """A NaN input gives NaN out of both kernels (on the GPU, fp32 arithmetic makes the canonical NaN
    0x7FFFFFFF, which the bf16 rounding once carried into -0.0)."""
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1)).to(dtype)
    x[1, 5] = float("nan")
    out = torch.empty(3, 32, dtype=dtype, device=DEVICE)
    triton_impl.silu_and_mul(x.to(DEVICE), out)
    assert out[1, 5].isnan() and not out[[0, 2]].isnan().any()
    normed, _ = rms_norm(x.to(DEVICE), torch.ones(64, dtype=dtype, device=DEVICE), 1e-6)
    assert normed[1].isnan().all() and not normed[[0, 2]].isnan().any()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rotary_kernel_matches_reference_on_strided_views(dtype):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(9, 6, 64, generator=g).to(dtype)
    x = qkv[:, 1:5]  # a view of a fused projection: row stride 6 * 64
    angles = torch.randn(9, 32, generator=g)
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
    out = torch.empty(9, 4, 64, dtype=dtype, device=DEVICE)
    triton_impl.rotary(x.to(DEVICE), cos.to(DEVICE), sin.to(DEVICE), out)
    ref = reference.rotary_ref(x, cos, sin)
    if DEVICE == "cpu":
        assert torch.equal(out, ref)  # the interpreter rounds products and sums as torch does
    else:  # compiled, Triton contracts x * cos + rot * sin into FMAs: at most a few ulps of |x| <= 5 apart
        torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=16 * torch.finfo(dtype).eps)


def test_ops_check_arguments_and_compile():
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match="rms_norm"):
        rms_norm(x, torch.ones(32), 1e-5)
    with pytest.raises(ValueError, match="silu_and_mul"):
        silu_and_mul(torch.randn(4, 63))
    with pytest.raises(ValueError, match="rotary"):
        rotary(torch.randn(4, 2, 63), torch.randn(4, 63), torch.randn(4, 63))

    def f(x, r, w):
        h, s = rms_norm(x, w, 1e-5, r)
        return silu_and_mul(torch.cat([h, s], -1))

    w = torch.randn(64)
    r = torch.randn(4, 64)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x, r, w), f(x, r, w))
