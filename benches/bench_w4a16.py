"""W4A16 GEMM (AWQ): kernelkit's ``w4a16_gemm`` on the tensor-core layout (the engine's path: the CUDA
tensor-core kernel, with a small sweep of its launch configs, up to GEMV_MAX_M, dequantize + cuBLAS above), its
pieces, and the Triton ``awq_gemm`` on AutoAWQ's layout, against bf16 cuBLAS and torch's int4 weight-only
``_weight_int4pack_mm`` (gpt-fast's path), in one run. vLLM's ``awq_triton`` is not installed on the GPU machine:
its times on this H200 at (14336, 4096) are in shared/ANCHORS.md. Targets (issue 11): >= 3.0x bf16 at M = 1,
>= 2.5x at M = 16, >= 1.0x at M = 128, >= 0.8x at M = 4096."""

from __future__ import annotations

import pytest
import torch

from kernelkit.ops.timing import input_sets, median_ms
from kernelkit.ops.w4a16 import cuda_impl, mma_layout
from kernelkit.ops.w4a16.ops import GEMV_MAX_M, awq_gemm, w4a16_gemm
from kernelkit.quant.awq.format import pack_autoawq, quantize

pytestmark = pytest.mark.gpu
MS = (1, 16, 64, 128, 4096)
NKS = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (14336, 4096))
GROUP = 128


def _sweep(m: int) -> list[tuple[int, int, int, int]]:
    """(WARPS, MT, UNROLL, PF) launch configs of the tensor-core kernel."""
    return [(w, mt, u, pf) for w in (4, 8) for mt in ((1, 2) if m <= 8 else (2,)) for u in (2, 4) for pf in (0, 2)]


def _operands(m, n, k):
    def make(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(n, k, device="cuda", generator=g) * 0.02
        q, scales, zeros = quantize(w, GROUP)
        p = pack_autoawq(q, scales, zeros)
        mma = mma_layout.repack_mma(q, zeros, scales, GROUP, torch.bfloat16)
        return x, p["qweight"], p["qzeros"], p["scales"].to(torch.bfloat16), w.bfloat16(), mma

    return input_sets(make, m * k * 2 + n * k // 2)


def _int4pack(w: torch.Tensor):
    """torch's int4 weight-only path (gpt-fast): symmetric-offset int4, group 128, packed for its kernel."""
    n, k = w.shape
    g = w.float().reshape(n, k // GROUP, GROUP)
    lo, hi = g.amin(-1), g.amax(-1)
    scales = (hi - lo).clamp(min=1e-6) / 15
    zeros = lo + scales * 8
    q = ((g - lo[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
    sz = torch.stack([scales.t(), zeros.t()], -1).to(torch.bfloat16).contiguous()  # [K/G, N, 2]
    return packed, sz


@pytest.mark.parametrize("n, k", NKS)
@pytest.mark.parametrize("m", MS)
def bench_awq_gemm(record, m, n, k):
    sets = _operands(m, n, k)
    bf16 = median_ms(lambda x, qw, qz, s, w, mma: x @ w.t(), sets)
    row = {"M": m, "N": n, "K": k, "bf16 cuBLAS": f"{bf16 * 1e3:.1f} µs"}
    peers = {"bf16 cuBLAS": bf16}
    ours = median_ms(lambda x, qw, qz, s, w, mma: w4a16_gemm(x, *mma, n), sets)
    row["kernelkit w4a16_gemm"] = f"{ours * 1e3:.1f} µs = {bf16 / ours:.2f}x"
    guarded = {"w4a16_gemm": ours}
    if m <= GEMV_MAX_M:
        times = {cfg: median_ms(lambda x, qw, qz, s, w, mma, cfg=cfg: cuda_impl.gemm(x, *mma, n, GROUP, cfg), sets)
                 for cfg in _sweep(m)}
        best_cfg = min(times, key=times.get)
        best = times[best_cfg]
        record("awq_gemm_sweep", {"M": m, "N": n, "K": k, "default": str(cuda_impl.launch_config(m, n, k, GROUP)),
                                  **{str(c): f"{t * 1e3:.1f}" for c, t in times.items()}})
        row["tensor-core kernel, best (warps, mt, unroll, pf)"] = f"{best * 1e3:.1f} µs = {bf16 / best:.2f}x {best_cfg}"
    if m >= 64:
        deq = median_ms(lambda x, qw, qz, s, w, mma: x @ cuda_impl.dequantize(*mma, n).t(), sets)
        row["dequantize + cuBLAS"] = f"{deq * 1e3:.1f} µs = {bf16 / deq:.2f}x"
        guarded["dequantize + cuBLAS"] = deq
    tri = median_ms(lambda x, qw, qz, s, w, mma: awq_gemm(x, qw, qz, s, GROUP), sets)
    row["Triton awq_gemm"] = f"{tri * 1e3:.1f} µs = {bf16 / tri:.2f}x"
    try:
        packs = [_int4pack(w) for *_, w, _mma in sets]
        pairs = [(x, p, sz) for (x, *_), (p, sz) in zip(sets, packs, strict=True)]
        int4 = median_ms(lambda x, p, sz: torch._weight_int4pack_mm(x, p, GROUP, sz), pairs)
        row["torch int4pack_mm"] = f"{int4 * 1e3:.1f} µs = {bf16 / int4:.2f}x"
        peers["torch int4pack_mm"] = int4
    except (RuntimeError, AttributeError, TypeError) as e:
        row["torch int4pack_mm"] = f"fails: {str(e).splitlines()[0][:40]}"
    record("awq_gemm", row, ours=guarded | {"Triton awq_gemm": tri}, peers=peers, flops=2 * m * n * k)
