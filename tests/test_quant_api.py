"""The public quantizer API: argument checks, scale layouts, caller buffers, torch.compile.

On CPU the custom ops run the torch reference, so these tests are about the wrappers and the ops' schemas.
"""

import pytest
import torch
from quant_cases import assert_same_q, assert_same_scales, make_x

from kernelkit import ops
from kernelkit.ops.quant import cuda_impl, reference


def test_row_major_and_leading_dims():
    x = make_x(6, 256, torch.bfloat16, seed=0).view(2, 3, 256)
    q, s = ops.per_token_group_quant_fp8(x, 128)
    assert q.shape == (2, 3, 256) and q.dtype == torch.float8_e4m3fn and s.shape == (2, 3, 2)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x, 128, torch.float8_e4m3fn)
    assert_same_q(q, q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize("tma", [False, True])
def test_column_major_scales(tma):
    x = make_x(7, 384, torch.float16, seed=1)
    q, s = ops.per_token_group_quant_8bit(x, 128, torch.int8, column_major_scales=True, scale_tma_aligned=tma)
    assert s.shape == (7, 3) and s.stride() == (1, 8 if tma else 7)
    assert_same_scales(s, reference.per_token_group_quant_8bit_ref(x, 128, torch.int8)[1])


def test_ue8m0_scales():
    x = make_x(5, 256, torch.bfloat16, seed=2)
    _, s = ops.per_token_group_quant_fp8(x, 128, column_major_scales=True, scale_tma_aligned=True,
                                         scale_ue8m0=True)
    assert torch.equal(torch.log2(s), torch.round(torch.log2(s)))


def test_writes_into_caller_buffers():
    x = make_x(4, 256, torch.bfloat16, seed=3)
    out_q = torch.empty(4, 256, dtype=torch.float8_e4m3fn)
    out_s = torch.empty(2, 8).t()[:4]  # column-major with padding: strides (1, 8)
    q, s = ops.per_token_group_quant_fp8(x, 128, column_major_scales=True, scale_tma_aligned=True,
                                         out_q=out_q, out_s=out_s)
    assert q.data_ptr() == out_q.data_ptr() and s.data_ptr() == out_s.data_ptr()
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x, 128, torch.float8_e4m3fn)
    assert_same_q(out_q, q_ref)
    assert_same_scales(out_s, s_ref)


def test_non_contiguous_input_is_handled():
    x = make_x(256, 8, torch.float32, seed=4).t()  # [8, 256], last stride 256
    q, s = ops.per_token_group_quant_8bit(x, 64, torch.int8)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.contiguous(), 64, torch.int8)
    assert_same_q(q, q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"group_size": 48}, ValueError, "group_size must be one of"),
        ({"group_size": 512}, ValueError, "group_size must be one of"),
        ({"group_size": 64, "x": torch.randn(4, 96)}, ValueError, "not divisible by group_size 64"),
        ({"group_size": 128, "scale_ue8m0": True}, ValueError, "scale_ue8m0 needs column_major_scales"),
        ({"group_size": 128, "scale_ue8m0": True, "column_major_scales": True}, ValueError, "scale_tma_aligned"),
        ({"group_size": 128, "scale_tma_aligned": True}, ValueError, "needs column_major_scales"),
        ({"group_size": 128, "column_major_scales": True, "x": torch.randn(2, 2, 256)}, ValueError, "2-D x"),
        ({"group_size": 128, "dst_dtype": torch.float16}, ValueError, "float8_e4m3fn and int8"),
        ({"group_size": 128, "eps": 0.0}, ValueError, "eps must be"),
        ({"group_size": 128, "eps": float("nan")}, ValueError, "eps must be"),
        ({"group_size": 128, "x": torch.randn(4, 256).to(torch.int32)}, TypeError, "bfloat16, float16 or float32"),
        ({"group_size": 128, "x": torch.randn(4, 0)}, ValueError, "non-empty last dimension"),
        ({"group_size": 128, "out_q": torch.empty(4, 256, dtype=torch.int8)}, ValueError, "out_q must be"),
        ({"group_size": 128, "out_q": torch.empty(256, 4, dtype=torch.float8_e4m3fn).t()}, ValueError,
         "contiguous"),
        ({"group_size": 128, "out_s": torch.empty(4, 3)}, ValueError, r"shape \(4, 2\)"),
        ({"group_size": 128, "out_s": torch.empty(2, 4).t()}, ValueError, "do not fit row-major"),
        ({"group_size": 128, "column_major_scales": True, "out_s": torch.empty(4, 2)}, ValueError,
         "do not fit column-major"),
        ({"group_size": 128, "column_major_scales": True, "scale_tma_aligned": True,
          "out_s": torch.empty(2, 5).t()[:4]}, ValueError, "TMA-aligned"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", torch.randn(4, 256))
    with pytest.raises(error, match=match):
        ops.per_token_group_quant_8bit(x, **kwargs)


def test_per_token_int8_api():
    x = make_x(3, 576, torch.bfloat16, seed=5).view(1, 3, 576)
    q, s = ops.per_token_quant_int8(x)
    assert q.shape == (1, 3, 576) and s.shape == (1, 3, 1)
    q_ref, s_ref = reference.per_token_quant_int8_ref(x)
    assert_same_q(q, q_ref)
    assert_same_scales(s, s_ref)


def test_per_tensor_fp8_api():
    x = make_x(3, 64, torch.float32, seed=6)
    q, s = ops.per_tensor_quant_fp8(x)
    assert s.shape == (1,) and q.dtype == torch.float8_e4m3fn
    q2, s2 = ops.per_tensor_quant_fp8(x, s)
    assert_same_q(q2, q)
    with pytest.raises(ValueError, match="one float32 element"):
        ops.per_tensor_quant_fp8(x, torch.ones(2))


class _QuantLinear(torch.nn.Module):
    """A toy layer that quantizes its input per token group and dequantizes it before the matmul."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(64, 256))

    def forward(self, x):
        q, s = ops.per_token_group_quant_fp8(x, 128)
        x_hat = (q.float().view(*x.shape[:-1], 2, 128) * s.unsqueeze(-1)).view(x.shape)
        return torch.nn.functional.linear(x_hat, self.weight)


def test_custom_ops_compile_fullgraph():
    model = _QuantLinear()
    x = torch.randn(5, 256)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    q = torch.empty(5, 256, dtype=torch.int8)
    s = torch.empty(5, 2)
    torch.library.opcheck(torch.ops.kernelkit.per_token_group_quant_8bit_, (x, q, s, 128, 1e-10, False))


@pytest.mark.parametrize("d", [1, 2, 3, 7, 9, 56, 112, 128, 448, 2**31 - 1, 2**31, 2**32 - 1])
def test_div_magic_divides_exactly_for_every_32_bit_numerator(d):
    """The kernel's row index is (umulhi(n, mul) + n) >> shift; it must equal n // d at the edges of the range
    and on random numerators."""
    mul, shift = cuda_impl.div_magic(d)
    gen = torch.Generator().manual_seed(d % 2**31)
    edges = [0, 1, d - 1, d, d + 1, 2 * d - 1, 2**31 - 1, 2**31, 2**32 - 1]
    randoms = torch.randint(0, 2**31, (2000,), generator=gen).tolist()
    for n in [e for e in edges if 0 <= e < 2**32] + randoms + [2**32 - 1 - r for r in randoms]:
        assert ((((n * mul) >> 32) + n) >> shift) == n // d, (n, d)


def test_div_magic_rejects_out_of_range_divisors():
    with pytest.raises(ValueError, match="divisor 0"):
        cuda_impl.div_magic(0)
