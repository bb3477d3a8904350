"""The dense W8A8 int8 GEMM (``int8_scaled_mm``: per-token int8 activations x per-channel int8 weights, scales
and the bf16 cast included): kernelkit's dispatch, the Triton kernel and ``torch._int_mm`` with its scaling,
against bf16 cuBLAS on the same shapes (the attention projections of Qwen3-30B-A3B and Llama-3-8B's linears),
CUDA-graph medians over input sets rotated past the L2 cache. At M <= 16 the floor is the int8 weight read:
N x K bytes at the copy rate. ``bench_int8_gemm_decode_configs`` sweeps the Triton kernel's launch configs at
decode sizes (what ``triton_impl.launch_config`` is fitted to).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from kernelkit.ops.int8_gemm import ops, triton_impl
from kernelkit.ops.int8_gemm.ops import int8_scaled_mm
from kernelkit.ops.timing import copy_bandwidth_gbs, input_sets, median_ms

pytestmark = pytest.mark.gpu
MS = (1, 16, 64, 256, 4096)
NKS = ((5120, 2048), (2048, 4096), (6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))


def _operands(m, n, k):
    def make(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        a = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8, generator=g)
        sa = torch.rand(m, 1, device="cuda", generator=g) * 1e-2
        sb = torch.rand(n, 1, device="cuda", generator=g) * 1e-3
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
        return a, b, sa, sb, x, w

    return input_sets(make, 3 * (m * k + n * k))


@pytest.fixture(scope="module")
def copy_gbs():
    return copy_bandwidth_gbs()


@pytest.mark.parametrize("n, k", NKS)
@pytest.mark.parametrize("m", MS)
def bench_int8_scaled_mm(record, copy_gbs, m, n, k):
    sets = _operands(m, n, k)
    runs = {"kernelkit": lambda a, b, sa, sb, x, w: int8_scaled_mm(a, b, sa, sb, torch.bfloat16),
            "triton": lambda a, b, sa, sb, x, w: triton_impl.int8_scaled_mm(a, b, sa, sb, torch.bfloat16),
            "torch._int_mm": lambda a, b, sa, sb, x, w: ops.int_mm_scaled(a, b, sa, sb, torch.bfloat16, None),
            "bf16 cuBLAS": lambda a, b, sa, sb, x, w: x @ w.t()}
    times = {name: median_ms(fn, sets) for name, fn in runs.items()}
    floor_us = n * k / (copy_gbs * 1e3)
    row = {"M": m, "N": n, "K": k, **{name: f"{ms * 1e3:.1f} µs" for name, ms in times.items()},
           "bf16 / kernelkit": f"{times['bf16 cuBLAS'] / times['kernelkit']:.2f}x",
           "int8 weight-read floor": f"{floor_us:.1f} µs" if m <= 16 else "–"}
    record("int8_scaled_mm", row, ours={n_: times[n_] for n_ in ("kernelkit", "triton")},
           peers={n_: times[n_] for n_ in ("torch._int_mm", "bf16 cuBLAS")}, flops=2 * m * n * k)


@pytest.mark.parametrize("n, k", NKS[:4])
@pytest.mark.parametrize("m", (1, 16))
def bench_int8_gemm_decode_configs(record, copy_gbs, m, n, k):
    sets = _operands(m, n, k)
    timed = []
    for bn, bk, warps, stages in itertools.product((16, 32, 64), (128, 256, 512), (4, 8), (3, 5)):
        config = {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 1, "num_warps": warps,
                  "num_stages": stages}
        try:
            ms = median_ms(lambda a, b, sa, sb, x, w, c=config: triton_impl.int8_scaled_mm(a, b, sa, sb,
                                                                                        torch.bfloat16, None, c), sets)
        except Exception as e:  # noqa: BLE001 - a config that does not fit shared memory
            print(f"config {config} fails: {str(e).splitlines()[0][:80]}")
            continue
        timed.append((ms, config))
    timed.sort(key=lambda t: t[0])
    heuristic = triton_impl.launch_config(m, n, k, torch.cuda.get_device_properties(0).multi_processor_count)
    ms_h = median_ms(lambda a, b, sa, sb, x, w: triton_impl.int8_scaled_mm(a, b, sa, sb, torch.bfloat16, None,
                                                                          heuristic), sets)
    best_ms, best = timed[0]
    fmt = lambda c: f"{c['BLOCK_N']}/{c['BLOCK_K']}/{c['num_warps']}w/{c['num_stages']}s"  # noqa: E731
    record("int8_gemm_decode_configs", {"M": m, "N": n, "K": k, "best (BN/BK/warps/stages)": fmt(best),
                                        "best µs": f"{best_ms * 1e3:.1f}", "heuristic": fmt(heuristic),
                                        "heuristic µs": f"{ms_h * 1e3:.1f}",
                                        "next best": ", ".join(f"{fmt(c)} {t * 1e3:.1f}" for t, c in timed[1:4]),
                                        "floor µs": f"{n * k / (copy_gbs * 1e3):.1f}"})
