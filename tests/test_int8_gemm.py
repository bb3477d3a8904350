"""``int8_scaled_mm`` (the dense W8A8 int8 GEMM): the reference against integer arithmetic, the ``torch._int_mm``
path (run on CPU tensors here, on the GPU with one) bit-exact against the reference at M on both sides of its
17-row minimum, N not a multiple of 8 (the fallback), M = 0 and with a bias; the fake and the errors."""

import pytest
import torch

from kernelkit.ops.int8_gemm import ops, reference
from kernelkit.ops.int8_gemm.ops import int8_scaled_mm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _operands(m, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    return a, b, torch.rand(m, 1, generator=g) * 0.1, torch.rand(n, 1, generator=g) * 0.01


def test_reference_is_integer_arithmetic():
    a, b, sa, sb = _operands(7, 24, 4096)
    exact = (a.long() @ b.long().t()).double() * sa.double() * sb.double().t()
    torch.testing.assert_close(reference.int8_scaled_mm_ref(a, b, sa, sb, torch.float32), exact.float(),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("m", [0, 1, 16, 17, 33])
@pytest.mark.parametrize("n, k", [(24, 64), (40, 200), (36, 64)])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_op_matches_reference(m, n, k, out_dtype):
    a, b, sa, sb = _operands(m, n, k, seed=m + n)
    bias = torch.randn(n)
    expected = reference.int8_scaled_mm_ref(a, b, sa, sb, out_dtype, bias)
    ours = int8_scaled_mm(a.to(DEVICE), b.to(DEVICE), sa.to(DEVICE), sb.to(DEVICE), out_dtype, bias.to(DEVICE))
    assert ours.dtype == out_dtype and ours.shape == (m, n)
    torch.testing.assert_close(ours.cpu(), expected, rtol=0, atol=0)
    if not ops._int_mm_unsupported(a, b, sa, sb, out_dtype, bias):  # the CUDA path, here on these tensors' device
        torch.testing.assert_close(ops.int_mm_scaled(a, b, sa, sb, out_dtype, bias), expected, rtol=0, atol=0)


def test_fake_and_errors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        a, b = torch.empty(5, 64, dtype=torch.int8), torch.empty(24, 64, dtype=torch.int8)
        assert int8_scaled_mm(a, b, torch.empty(5, 1), torch.empty(24, 1), torch.bfloat16).shape == (5, 24)
    a, b, sa, sb = _operands(3, 24, 64)
    with pytest.raises(ValueError, match=r"a and b must be int8 \[M, K\] and \[N, K\]"):
        int8_scaled_mm(a.float(), b, sa, sb, torch.bfloat16)
    with pytest.raises(ValueError, match="scale_a must have 3 values and scale_b 24"):
        int8_scaled_mm(a, b, sa[:2], sb, torch.bfloat16)
    with pytest.raises(ValueError, match="bias must have 24 values"):
        int8_scaled_mm(a, b, sa, sb, torch.bfloat16, torch.zeros(5))


@pytest.mark.parametrize("m, n, k", [(0, 24, 64), (1, 40, 200), (5, 24, 72), (16, 40, 300), (17, 72, 64),
                                     (70, 24, 40), (3, 24, 0)])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_triton_kernel_is_the_reference_exactly(m, n, k, out_dtype, with_bias):
    """Every launch-config class (M <= 16, <= 64, larger), sizes off the tiles and K = 0; the epilogue does no
    fused multiply-add, so the values are the reference's bit for bit, NaN scales included."""
    from kernelkit.ops.int8_gemm import triton_impl

    a, b, sa, sb = _operands(m, n, k, seed=3 * m + n + k)
    if m > 2:
        sa[2] = float("nan")
    bias = torch.randn(n).to(out_dtype) if with_bias else None
    expected = reference.int8_scaled_mm_ref(a, b, sa, sb, out_dtype, bias)
    ours = triton_impl.int8_scaled_mm(*(t.to(DEVICE) for t in (a, b, sa, sb)), out_dtype,
                                      bias.to(DEVICE) if with_bias else None)
    assert ours.dtype == out_dtype and ours.shape == (m, n)
    torch.testing.assert_close(ours.cpu(), expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("m, n", [(1, 4096), (1, 1024), (16, 20000), (48, 4096), (4096, 4096)])
def test_launch_config_fills_the_gpu_at_decode_sizes(m, n):
    from kernelkit.ops.int8_gemm.triton_impl import launch_config

    c = launch_config(m, n, 4096, num_sms=132)
    assert m <= c["BLOCK_M"] or c["BLOCK_M"] == 128
    if m <= 16 and n >= 16 * 132:
        assert -(-n // c["BLOCK_N"]) >= 132  # every SM streams part of the weight
