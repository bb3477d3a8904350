"""GPU: every implementation of the quantizers against the torch reference (computed on CPU), bit for bit
on q and to 1e-6 on the scales; plus torch.compile, CUDA graphs and streams. Skipped without a GPU."""

import pytest
import torch
from quant_cases import DST, DTYPES, assert_same_q, assert_same_scales, make_x

from kernelkit import ops
from kernelkit.jit import BackendUnavailable
from kernelkit.ops.dispatch import last_used
from kernelkit.ops.quant import cuda_impl, layouts, reference
from kernelkit.ops.quant.ops import GROUP_IMPLS, TENSOR_IMPLS

pytestmark = pytest.mark.gpu

GROUP_RUN = {name: run for name, _, run in GROUP_IMPLS}
LAYOUTS = {"row": (False, False, False), "col": (True, False, False), "col-tma": (True, True, False),
           "col-tma-ue8m0": (True, True, True)}


def _run_group(impl, x, group, dst, column_major=False, tma=False, ue8m0=False):
    m, h = x.shape
    q = torch.full(x.shape, 0x55, dtype=torch.uint8, device="cuda").view(dst)  # poisoned
    s = layouts.alloc_scales((m,), m, h // group, column_major, tma, x.device).fill_(float("nan"))
    GROUP_RUN[impl](layouts.as_rows(x), q, s, group, 1e-10, ue8m0)
    torch.cuda.synchronize()
    return q, s


def _check_group(impl, x, group, dst, layout="row"):
    column_major, tma, ue8m0 = LAYOUTS[layout]
    q, s = _run_group(impl, x, group, dst, column_major, tma, ue8m0)
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), group, dst, scale_ue8m0=ue8m0)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize("impl", ["cuda-tvm_ffi", "cuda-nvrtc", "triton"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("group", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("dst", DST, ids=["fp8", "int8"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16", "fp32"])
def test_group_quant_bit_exact(impl, dtype, dst, group, layout):
    x = make_x(67, 9 * group, dtype, "cuda", seed=group, specials=True)
    _check_group(impl, x, group, dst, layout)


@pytest.mark.parametrize("impl", ["cuda-tvm_ffi", "cuda-nvrtc", "triton"])
@pytest.mark.parametrize("m, h", [(0, 128), (1, 576), (3, 7168), (4097, 2048)])
def test_group_quant_shapes(impl, m, h):
    x = make_x(m, h, torch.bfloat16, "cuda", seed=m)
    _check_group(impl, x, 64, torch.float8_e4m3fn)


@pytest.mark.parametrize("impl", ["cuda-tvm_ffi", "cuda-nvrtc", "triton"])
def test_group_quant_strided_rows(impl):
    x = make_x(33, 1024, torch.bfloat16, "cuda", seed=7, row_stride=1536)
    _check_group(impl, x, 128, torch.int8)


@pytest.mark.parametrize("backend", ["tvm_ffi", "nvrtc"])
@pytest.mark.parametrize("unroll, waves", [(1, 0), (1, 1), (2, 0), (4, 1), (4, 0)])
def test_launch_variants_bit_exact(backend, unroll, waves):
    """Every groups-per-thread and grid choice the benches compare; waves=1 makes blocks stride over the rows."""
    run = cuda_impl.group_quant_tvm_ffi if backend == "tvm_ffi" else cuda_impl.group_quant_nvrtc
    for dtype, dst, group in ((torch.bfloat16, torch.float8_e4m3fn, 128), (torch.float32, torch.int8, 64)):
        x = make_x(1031, 7168, dtype, "cuda", seed=unroll)
        q = torch.full(x.shape, 0x55, dtype=torch.uint8, device="cuda").view(dst)
        s = torch.full((1031, 7168 // group), float("nan"), device="cuda")
        run(x, q, s, group, 1e-10, False, unroll=unroll, waves=waves)
        q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), group, dst)
        assert_same_q(q.cpu(), q_ref)
        assert_same_scales(s, s_ref)


def test_group_quant_large_random_bit_exact():
    """4M values in the real DeepSeek-V3 configuration (bf16, group 128, FP8) through the dispatcher."""
    x = torch.randn(2048, 7168, device="cuda", dtype=torch.bfloat16) * 3
    q, s = ops.per_token_group_quant_fp8(x, 128, column_major_scales=True, scale_tma_aligned=True)
    assert last_used()["per_token_group_quant_8bit"] == "cuda-tvm_ffi"
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), 128, torch.float8_e4m3fn)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


def test_unaligned_input_declines_cuda_and_stays_correct():
    x = make_x(8, 257, torch.bfloat16, "cuda", seed=1)[:, 1:]  # rows start 2 bytes in
    q, s = ops.per_token_group_quant_8bit(x, 128, torch.int8)
    assert last_used()["per_token_group_quant_8bit"] == "triton"
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), 128, torch.int8)
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize("h", [576, 4096, 14336])
def test_per_token_int8(h):
    x = make_x(37, h, torch.bfloat16, "cuda", seed=h, specials=True)
    q, s = ops.per_token_quant_int8(x)
    q_ref, s_ref = reference.per_token_quant_int8_ref(x.cpu())
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


@pytest.mark.parametrize("impl", [name for name, _, _ in TENSOR_IMPLS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("m, h", [(0, 64), (1, 576), (333, 4096)])
def test_per_tensor_fp8_static(impl, dtype, m, h):
    run = dict((name, run) for name, _, run in TENSOR_IMPLS)[impl]
    x = make_x(m, h, dtype, "cuda", seed=m, specials=m > 4)
    scale = torch.tensor([0.05], device="cuda")
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device="cuda")
    try:
        run(x, q, scale, 1e-10, False)
    except BackendUnavailable as e:  # e.g. the CuTe DSL is not installed
        pytest.skip(str(e))
    assert_same_q(q.cpu(), reference.per_tensor_quant_fp8_ref(x.cpu(), scale.cpu())[0])


@pytest.mark.parametrize("m, h", [(0, 64), (5, 576), (4096, 7168)])
def test_per_tensor_fp8_dynamic(m, h):
    x = make_x(m, h, torch.bfloat16, "cuda", seed=m)
    q, s = ops.per_tensor_quant_fp8(x)
    q_ref, s_ref = reference.per_tensor_quant_fp8_ref(x.cpu())
    assert_same_q(q.cpu(), q_ref)
    assert_same_scales(s, s_ref)


def test_torch_compile_fullgraph_inductor():
    def f(x):
        q, s = ops.per_token_group_quant_fp8(x, 128, column_major_scales=True, scale_tma_aligned=True)
        return q.float() * s.repeat_interleave(128, dim=1)

    x = torch.randn(40, 1024, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=0, atol=0)


def test_cuda_graph_capture_and_replay():
    x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
    ops.per_token_group_quant_fp8(x, 128)  # compiles and loads outside capture
    ops.per_token_quant_int8(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q, s = ops.per_token_group_quant_fp8(x, 128)
        qi, si = ops.per_token_quant_int8(x)
    for seed in range(3):
        x.copy_(make_x(64, 4096, torch.bfloat16, "cuda", seed=seed))
        graph.replay()
        torch.cuda.synchronize()
        q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x.cpu(), 128, torch.float8_e4m3fn)
        assert_same_q(q.cpu(), q_ref)
        assert_same_scales(s, s_ref)
        assert_same_q(qi.cpu(), reference.per_token_quant_int8_ref(x.cpu())[0])


@pytest.mark.parametrize("impl", ["cuda-tvm_ffi", "cuda-nvrtc", "triton"])
def test_launches_on_the_current_stream(impl):
    """Captured into a CUDA graph on a side stream: a launch on any other stream would break the capture."""
    x = make_x(512, 4096, torch.bfloat16, "cuda", seed=3)
    q = torch.empty(x.shape, dtype=torch.int8, device="cuda")
    s = torch.empty(512, 32, device="cuda")
    GROUP_RUN[impl](x, q, s, 128, 1e-10, False)  # compile and load outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        GROUP_RUN[impl](x, q, s, 128, 1e-10, False)
    x.copy_(make_x(512, 4096, torch.bfloat16, "cuda", seed=4))
    q.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert_same_q(q.cpu(), reference.per_token_group_quant_8bit_ref(x.cpu(), 128, torch.int8)[0])
