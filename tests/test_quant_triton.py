"""Triton quantizers against the torch reference (evaluated on CPU), bit for bit.

Without a GPU these run in Triton's interpreter (conftest sets TRITON_INTERPRET=1) on CPU tensors; with one,
on the GPU.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from quant_cases import DST, DTYPES, assert_same_q, assert_same_scales, make_x

from kernelkit.ops.quant import layouts, reference, triton_impl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LAYOUTS = {  # (column_major, tma_aligned, ue8m0)
    "row": (False, False, False),
    "col": (True, False, False),
    "col-tma": (True, True, False),
    "col-tma-ue8m0": (True, True, True),
}


def triton_group_quant(x, group, dst, column_major=False, tma=False, ue8m0=False, eps=1e-10):
    m, h = x.shape
    q = torch.empty(x.shape, dtype=dst, device=x.device)
    s = layouts.alloc_scales((m,), m, h // group, column_major, tma, x.device)
    triton_impl.group_quant(layouts.as_rows(x), q, s, group, eps, ue8m0)
    return q, s


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("group", [16, 64, 128, 256])
@pytest.mark.parametrize("dst", DST, ids=["fp8", "int8"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16", "fp32"])
def test_group_quant_matches_reference(dtype, dst, group, layout):
    column_major, tma, ue8m0 = LAYOUTS[layout]
    x = make_x(33, 3 * group, dtype, DEVICE, seed=group + len(layout), specials=True)
    q, s = triton_group_quant(x, group, dst, column_major, tma, ue8m0)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), group, dst, scale_ue8m0=ue8m0)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)
    if tma:
        assert s.stride() == (1, 36)  # 33 rows padded to 36


@pytest.mark.parametrize("m", [0, 1, 2, 7])
def test_group_quant_odd_and_empty_batches(m):
    x = make_x(m, 576, torch.bfloat16, DEVICE, seed=m)
    q, s = triton_group_quant(x, 64, torch.float8_e4m3fn)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), 64, torch.float8_e4m3fn)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


def test_group_quant_strided_rows():
    x = make_x(9, 512, torch.bfloat16, DEVICE, seed=4, row_stride=768)
    assert x.stride() == (768, 1)
    q, s = triton_group_quant(x, 128, torch.int8)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), 128, torch.int8)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


def test_fp8_rounding_carries_into_the_exponent():
    """Values just under a binade boundary must round up (Triton 3.6's interpreter cast gets this wrong)."""
    x = torch.tensor([[126.99, 31.05, -15.9, 0.0, -0.0, 447.0, 1e-3, -2.0**-9 * 0.5] * 16], device=DEVICE)
    x[0, 5] = 448.0  # sets amax = 448, so scale = 1 and q = cast(x)
    q, s = triton_group_quant(x, 128, torch.float8_e4m3fn)
    assert s.item() == 1.0
    assert_same_q(q.cpu(), x.cpu().to(torch.float8_e4m3fn))
    assert q.float()[0, :3].tolist() == [128.0, 32.0, -16.0]


@pytest.mark.parametrize("h", [576, 4096])
def test_per_token_int8_matches_reference(h):
    x = make_x(5, h, torch.float16, DEVICE, seed=h, specials=True)
    q = torch.empty(x.shape, dtype=torch.int8, device=DEVICE)
    s = torch.empty(5, 1, device=DEVICE)
    triton_impl.group_quant(x, q, s, h, 1e-10, False)
    q_ref, s_ref = reference.per_token_quant_int8_ref(x.cpu())
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("shape", [(0, 64), (1, 64), (37, 576)])
def test_per_tensor_fp8_matches_reference(shape, dynamic):
    x = make_x(*shape, torch.bfloat16, DEVICE, seed=shape[0])
    scale = torch.tensor([0.02], device=DEVICE)
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=DEVICE)
    s = torch.empty(1, device=DEVICE) if dynamic else scale.clone()
    triton_impl.tensor_quant_fp8(x, q, s, 1e-10, dynamic)
    q_ref, s_ref = reference.per_tensor_quant_fp8_ref(x.cpu(), None if dynamic else scale.cpu())
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


def test_per_tensor_fp8_propagates_nan():
    x = make_x(8, 128, torch.float32, DEVICE, seed=0, specials=True)
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=DEVICE)
    s = torch.empty(1, device=DEVICE)
    triton_impl.tensor_quant_fp8(x, q, s, 1e-10, True)
    assert s.isnan().all() and q.float().isnan().all()


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(0, 40),
    groups=st.integers(1, 6),
    group=st.sampled_from([16, 32, 64, 128, 256]),
    dtype=st.sampled_from(DTYPES),
    dst=st.sampled_from(DST),
    layout=st.sampled_from(sorted(LAYOUTS)),
    scale=st.sampled_from([1e-6, 1.0, 300.0]),
    seed=st.integers(0, 2**16),
)
def test_group_quant_property(m, groups, group, dtype, dst, layout, scale, seed):
    """Any shape, flag and magnitude: Triton equals the reference bit for bit."""
    column_major, tma, ue8m0 = LAYOUTS[layout]
    x = (make_x(m, groups * group, torch.float32, seed=seed) * scale).to(dtype).to(DEVICE)
    q, s = triton_group_quant(x, group, dst, column_major, tma, ue8m0)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), group, dst, scale_ue8m0=ue8m0)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)
