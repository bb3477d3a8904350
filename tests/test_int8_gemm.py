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
