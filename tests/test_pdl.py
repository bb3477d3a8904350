"""Programmatic dependent launch (``kernelkit.ops.pdl``). On the CPU: when it is on (compute capability 9.0+,
not the Triton interpreter, ``KERNELKIT_PDL=1``) and the launch keywords it gives. On a GPU: a chain of PDL-launched
kernels, each reading the one before (split-K block-FP8 GEMM -> its reduce -> RMSNorm with residual -> SiLU
and mul), replayed from a CUDA graph on fresh inputs, equals the same chain launched without PDL."""

import pytest
import torch

from kernelkit.ops import pdl


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv("KERNELKIT_PDL", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pdl.enabled.cache_clear()
    yield monkeypatch
    pdl.enabled.cache_clear()


@pytest.mark.parametrize("capability, env, interpret, want", [
    ((9, 0), "1", None, True), ((10, 0), "1", None, True), ((8, 9), "1", None, False),
    ((9, 0), "0", None, False), ((9, 0), None, None, False), ((9, 0), "1", "1", False)])
def test_enabled_on_hopper_and_later_when_turned_on(fresh, capability, env, interpret, want):
    fresh.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    if env is not None:
        fresh.setenv("KERNELKIT_PDL", env)
    if interpret is not None:
        fresh.setenv("TRITON_INTERPRET", interpret)
    assert pdl.enabled(0) is want
    want_kwargs = {"USE_PDL": True, "launch_pdl": True} if want else {"USE_PDL": False}
    assert pdl.launch_kwargs(torch.device("cuda", 0)) == want_kwargs


def test_a_bad_setting_is_named(fresh):
    fresh.setenv("KERNELKIT_PDL", "yes")
    with pytest.raises(ValueError, match="KERNELKIT_PDL must be 0 .* or 1 .*, got 'yes'"):
        pdl.enabled(0)


def test_cpu_tensors_never_launch_with_pdl(fresh):
    fresh.setenv("KERNELKIT_PDL", "1")
    fresh.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert pdl.launch_kwargs(torch.device("cpu")) == {"USE_PDL": False}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="needs a Hopper or later GPU")
def test_pdl_chain_in_a_cuda_graph_equals_the_chain_without(fresh):
    from kernelkit.ops import per_token_group_quant_fp8
    from kernelkit.ops.gemm import triton_impl as gemm
    from kernelkit.ops.layers import triton_impl as layers
    from kernelkit.quant.fp8_block.format import quantize_weight

    m, n, k = 3, 4096, 4096
    w = torch.randn(n, k, device="cuda") * 0.05
    wq, ws = quantize_weight(w, (128, 128))
    norm_w = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    config = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 2,
              "num_stages": 4, "SPLIT_K": 4}
    x = torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
    res = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    y, normed, res_out = (torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    act = torch.empty(m, n // 2, device="cuda", dtype=torch.bfloat16)

    def chain():
        xq, xs = per_token_group_quant_fp8(x, 128, column_major_scales=True)
        gemm.w8a8_block_fp8_matmul(xq, wq, xs, ws, (128, 128), y, config)
        layers.rms_norm(y, norm_w, 1e-5, res, normed, res_out)
        layers.silu_and_mul(normed, act)
        return act.clone(), res_out.clone()

    fresh.setenv("KERNELKIT_PDL", "1")
    pdl.enabled.cache_clear()
    assert pdl.enabled(torch.cuda.current_device())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and warm up off the capturing stream
        x.normal_(), res.normal_()
        chain()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = chain()
    for seed in range(3):
        torch.manual_seed(seed)
        x.normal_(), res.normal_()
        graph.replay()
        got = [t.clone() for t in outs]
        fresh.setenv("KERNELKIT_PDL", "0")
        pdl.enabled.cache_clear()
        want = chain()
        fresh.setenv("KERNELKIT_PDL", "1")
        pdl.enabled.cache_clear()
        for g, e in zip(got, want, strict=True):
            assert torch.equal(g, e)
