"""The tensor-core W4 layout and ``w4a16_gemm``: the layout against the formula its .cuh states (nibble by
nibble), the round trip at N not a multiple of 16, the reference against float64; on a GPU (mark ``gpu``) the
CUDA kernels against the reference at ragged N, M = 0 .. 200 (both sides of the GEMV / dequantize + cuBLAS
switch), strided activations, NaN/Inf rows, and the dequantization bit-exact."""

import pytest
import torch

from kernelkit.ops.w4a16 import mma_layout
from kernelkit.ops.w4a16.ops import GEMV_MAX_M, w4a16_gemm

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _weights(n, k, group, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    zeros = torch.randint(0, 16, (n, k // group), generator=g)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 1e-3).to(dtype)
    return q, zeros, scales


def test_layout_places_each_nibble_where_the_kernel_reads_it():
    n, k, group = 40, 128, 64
    q, zeros, scales = _weights(n, k, group)
    qweight, z, s = mma_layout.repack_mma(q, zeros, scales, group)
    assert qweight.shape == (3, 2, 32, 4) and qweight.dtype == torch.int32
    for tile in range(3):
        for chunk in range(2):
            for lane in range(32):
                g, t = divmod(lane, 4)
                for j in range(4):
                    word = qweight[tile, chunk, lane, j].item() & 0xFFFFFFFF
                    for p in range(8):
                        row = 16 * tile + g + 8 * (p % 2)
                        col = 64 * chunk + 16 * t + 4 * j + 2 * ((p % 4) // 2) + p // 4
                        expected = q[row, col].item() if row < n else 0
                        assert (word >> (4 * p)) & 15 == expected
    assert torch.equal(z[1, :, 3], zeros[19].to(torch.uint8)) and torch.equal(s[2, :, 7], scales[39])
    assert not z[2, :, 8:].any() and not s[2, :, 8:].any()  # rows past N: padding


@pytest.mark.parametrize("n, k, group", [(40, 192, 64), (200, 512, 128), (16, 256, 256)])
def test_round_trip_and_reference(n, k, group):
    q, zeros, scales = _weights(n, k, group, seed=n)
    packed = mma_layout.repack_mma(q, zeros, scales, group)
    q2, z2, s2 = mma_layout.unpack_mma(*packed, n)
    assert torch.equal(q2, q.to(torch.int32)) and torch.equal(z2, zeros.to(torch.int32)) and torch.equal(s2, scales)
    x = torch.randn(7, k, generator=torch.Generator().manual_seed(k))
    w = (q - zeros.repeat_interleave(group, 1)).double() * scales.double().repeat_interleave(group, 1)
    torch.testing.assert_close(w4a16_gemm(x, *packed, n).double(), x.double() @ w.t(), rtol=1e-5, atol=1e-5)
    assert w4a16_gemm(x[:0], *packed, n).shape == (0, n)


def test_refuses_what_it_cannot_hold():
    q, zeros, scales = _weights(16, 96, 32)
    with pytest.raises(ValueError, match="multiple of 64"):
        mma_layout.repack_mma(q, zeros, scales, 32)
    q, zeros, scales = _weights(16, 128, 64)
    with pytest.raises(ValueError, match="zeros and scales"):
        mma_layout.repack_mma(q, zeros[:, :1], scales, 64)
    packed = mma_layout.repack_mma(q, zeros, scales, 64)
    with pytest.raises(ValueError, match=r"x must be \[M, 128\]"):
        w4a16_gemm(torch.randn(2, 64), *packed, 16)
    with pytest.raises(ValueError, match="for N = 40"):
        w4a16_gemm(torch.randn(2, 128), *packed, 40)


def test_fake_implementation_gives_the_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    packed = mma_layout.repack_mma(*_weights(24, 128, 64), 64)
    with FakeTensorMode() as mode:
        args = [mode.from_tensor(t) for t in packed]
        assert w4a16_gemm(mode.from_tensor(torch.randn(3, 128)), *args, 24).shape == (3, 24)


def _gpu_case(n, k, group, dtype, seed=0):
    q, zeros, scales = _weights(n, k, group, seed=seed, dtype=dtype)
    return [t.cuda() for t in mma_layout.repack_mma(q, zeros, scales, group)]


def _tolerance_check(y, x, packed, n):
    """fp32 sums and one rounding of y to 16 bits; above GEMV_MAX_M also W rounded once to x's dtype (cuBLAS)."""
    ref = mma_layout.w4a16_mma_gemm_ref(x.float(), *packed, n).double()  # fp32 activations: no rounding of x
    w = mma_layout.dequantize_mma_ref(*packed, n).double()
    relative = 2e-5 if x.shape[0] <= GEMV_MAX_M else 2e-5 + (2 ** -8 if x.dtype == torch.bfloat16 else 2 ** -11)
    bound = (x.double().abs() @ w.abs().t()) * relative + ref.abs() * 2 ** -7 + 1e-6
    err = (y.double() - ref).abs()
    assert (err <= bound).all(), f"max error {err.max():.3g} beyond {bound[err > bound].min():.3g}"


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, k, group", [(40, 192, 64), (4104, 1024, 128), (520, 2048, 256), (96, 4096, 128)])
@pytest.mark.parametrize("m", [0, 1, 5, 8, 9, 16, 33, GEMV_MAX_M, GEMV_MAX_M + 1, 200])
def test_cuda_gemm_matches_reference(dtype, n, k, group, m):
    from kernelkit.ops.dispatch import last_used

    packed = _gpu_case(n, k, group, dtype, seed=n + m)
    x = torch.randn(m, k, device="cuda").to(dtype)
    y = w4a16_gemm(x, *packed, n)
    assert y.shape == (m, n) and y.dtype == dtype
    if m:
        assert last_used()["w4a16_gemm"] == "cuda"
        _tolerance_check(y.float(), x, packed, n)


@pytest.mark.parametrize("group", [64, 128, 256])
def test_launch_configs_lists_every_config_the_dispatch_chooses(group):
    from kernelkit.ops.w4a16 import cuda_impl

    chosen = {cuda_impl.launch_config(m, n, k, group)
              for m in range(1, GEMV_MAX_M + 1) for n in (8, 576, 8192, 8200, 28672)
              for k in range(group, 20 * 1024, group)}
    assert chosen == set(cuda_impl.launch_configs(group))


LAUNCH_CONFIGS = [(4, 1, 1, 0), (8, 1, 4, 1), (4, 2, 2, 2), (8, 2, 1, 1), (4, 1, 2, 0), (8, 2, 4, 2)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("config", LAUNCH_CONFIGS)
def test_every_launch_config_computes_the_same(config):
    from kernelkit.ops.w4a16 import cuda_impl

    n, k = 136, 16000  # 125 groups: the L2 prefetch (PF) runs, and ends on a partial iteration
    packed = _gpu_case(n, k, 128, torch.bfloat16, seed=1)
    x = torch.randn(11, k, device="cuda").to(torch.bfloat16)
    _tolerance_check(cuda_impl.gemm(x, *packed, n, 128, config).float(), x, packed, n)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_dequantization_is_bit_exact(dtype):
    from kernelkit.ops.w4a16 import cuda_impl

    packed = _gpu_case(72, 1024, 128, dtype, seed=2)
    assert torch.equal(cuda_impl.dequantize(*packed, 72), mma_layout.dequantize_mma_ref(*packed, 72).to(dtype))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [3, GEMV_MAX_M + 3])
def test_cuda_strided_activations_and_nonfinite_rows(m):
    n, k = 48, 512
    packed = _gpu_case(n, k, 128, torch.bfloat16, seed=3)
    wide = torch.randn(k + 64, m, device="cuda").to(torch.bfloat16)
    x = wide[:k].t()  # [m, k] with strides (1, m): copied to aligned rows
    _tolerance_check(w4a16_gemm(x, *packed, n).float(), x, packed, n)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    x[1, 5], x[2, 7] = float("nan"), float("inf")
    y = w4a16_gemm(x, *packed, n)
    assert y[1].isnan().all() and not y[2].isfinite().all()
    keep = [i for i in range(m) if i not in (1, 2)]
    assert y[keep].isfinite().all()
    _tolerance_check(y[keep].float(), x[keep], packed, n)
