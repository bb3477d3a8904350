"""W4A16 GEMM (AWQ, AutoAWQ layout): kernelkit's dispatch and a small sweep of Triton launch configs, against
bf16 cuBLAS and torch's int4 weight-only ``_weight_int4pack_mm`` (gpt-fast's path), in one run. vLLM's
``awq_triton`` is not installed on the GPU machine: its times on this H200 at (14336, 4096) are in
shared/ANCHORS.md. Targets (issue 11): >= 3.0x bf16 at M = 1, >= 2.5x at M = 16, >= 1.0x at M = 128, >= 0.8x at
M = 4096."""

from __future__ import annotations

import pytest
import torch
from timing import input_sets, median_ms

from kernelkit.ops.w4a16 import triton_impl
from kernelkit.ops.w4a16.ops import awq_gemm
from kernelkit.quant.awq.format import pack_autoawq, quantize

pytestmark = pytest.mark.gpu
MS = (1, 16, 128, 4096)
NKS = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (14336, 4096))
GROUP = 128


def _sweep(m: int, n: int, k: int) -> list[dict]:
    if m <= 32:
        tiles = [(16, 64), (16, 128), (16, 256)]
        return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": s, "num_warps": w, "num_stages": 3}
                for bm, bn in tiles for bk in (64, 128) for s in (max(1, 264 // -(-n // bn)), 8, 16)
                for w in (4,) if s * bk <= k]
    return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": w, "num_stages": st}
            for bm, bn, w in ((64, 128, 4), (128, 128, 8), (128, 256, 8)) for st in (3, 4)]


def _operands(m, n, k):
    def make(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(n, k, device="cuda", generator=g) * 0.02
        q, scales, zeros = quantize(w, GROUP)
        p = pack_autoawq(q, scales, zeros)
        return x, p["qweight"], p["qzeros"], p["scales"].to(torch.bfloat16), w.bfloat16()

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
    bf16 = median_ms(lambda x, qw, qz, s, w: x @ w.t(), sets)
    row = {"M": m, "N": n, "K": k, "bf16 cuBLAS": f"{bf16 * 1e3:.1f} µs"}
    ours = median_ms(lambda x, qw, qz, s, w: awq_gemm(x, qw, qz, s, GROUP), sets)
    row["kernelkit (default config)"] = f"{ours * 1e3:.1f} µs = {bf16 / ours:.2f}x"
    best, best_cfg = float("inf"), None
    for cfg in _sweep(m, n, k):
        try:
            t = median_ms(lambda x, qw, qz, s, w, cfg=cfg: triton_impl.awq_gemm(x, qw, qz, s, GROUP, cfg), sets)
        except Exception:  # a config Triton cannot build (shared memory): skip it
            continue
        if t < best:
            best, best_cfg = t, cfg
    if best_cfg is not None:
        short = {key.replace("BLOCK_", "").replace("num_", ""): v for key, v in best_cfg.items()}
        row["best swept config"] = f"{best * 1e3:.1f} µs = {bf16 / best:.2f}x {short}"
    try:
        packs = [_int4pack(w) for *_, w in sets]
        pairs = [(x, p, sz) for (x, *_), (p, sz) in zip(sets, packs, strict=True)]
        int4 = median_ms(lambda x, p, sz: torch._weight_int4pack_mm(x, p, GROUP, sz), pairs)
        row["torch int4pack_mm"] = f"{int4 * 1e3:.1f} µs = {bf16 / int4:.2f}x"
    except (RuntimeError, AttributeError, TypeError) as e:
        row["torch int4pack_mm"] = f"fails: {str(e).splitlines()[0][:40]}"
    record("awq_gemm", row)
