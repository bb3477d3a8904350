"""Block-FP8 GEMM: kernelkit's dispatch (cuBLAS where probed, else Triton) and the Triton kernel alone, against
``torch._scaled_mm`` block-wise and bf16 cuBLAS, in one run. TFLOP/s = 2 M N K / time.
Targets (issue 3): no worse than _scaled_mm block-wise anywhere; >= 1200 TFLOP/s at M=4096, N=7168, K=16384.
"""

from __future__ import annotations

import pytest
import torch

from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul
from kernelkit.ops.gemm import configs, triton_impl
from kernelkit.ops.timing import input_sets, median_ms
from kernelkit.quant.fp8_block.format import quantize_weight

pytestmark = pytest.mark.gpu
MS = (1, 16, 64, 256, 1024, 4096)
NKS = ((4096, 4096), (14336, 4096), (4096, 14336), (7168, 16384), (2112, 7168))


def _operands(m, n, k):
    def make(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(n, k, device="cuda", generator=g) * 0.02
        xq, xs = per_token_group_quant_fp8(x, 128, column_major_scales=True)
        wq, ws = quantize_weight(w)
        return xq, wq, xs, ws, x, w.bfloat16()

    return input_sets(make, m * k + n * k)


@pytest.mark.parametrize("n, k", NKS)
@pytest.mark.parametrize("m", MS)
def bench_w8a8_block_fp8_matmul(record, m, n, k):
    sets = _operands(m, n, k)
    config = configs.get_config(m, n, k, torch.cuda.get_device_name(), (128, 128))
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    runs = {
        "kernelkit": lambda a, b, a_s, b_s, x, w: w8a8_block_fp8_matmul(a, b, a_s, b_s, [128, 128]),
        "triton": lambda a, b, a_s, b_s, x, w: triton_impl.w8a8_block_fp8_matmul(a, b, a_s, b_s, (128, 128), out,
                                                                                  config),
        "_scaled_mm": lambda a, b, a_s, b_s, x, w: torch._scaled_mm(a, b.t(), scale_a=a_s, scale_b=b_s.t(),
                                                                    out_dtype=torch.bfloat16),
        "bf16 cuBLAS": lambda a, b, a_s, b_s, x, w: x @ w.t(),
    }
    row, times = {"M": m, "N": n, "K": k}, {}
    for name, fn in runs.items():
        try:
            times[name] = ms = median_ms(fn, sets)
            row[name] = f"{ms * 1e3:.1f} µs = {2 * m * n * k / ms / 1e9:.0f} TFLOP/s"
        except RuntimeError as e:
            row[name] = f"fails: {str(e).splitlines()[0][:40]}"
    ours = ("kernelkit", "triton")
    record("w8a8_block_fp8_matmul", row, ours={n: t for n, t in times.items() if n in ours},
           peers={n: t for n, t in times.items() if n not in ours}, flops=2 * m * n * k)
