"""The W8A8 int8 GEMM in Triton: int8 tensor-core MMAs with int32 accumulation, the per-token and per-channel
scales, the bias and the cast to the output dtype applied in the epilogue: one launch where ``torch._int_mm``
takes four (pad to 17 rows, the int32 GEMM, the scaling, the cast). For decode-sized M it reads the weight once
over many programs (small BLOCK_N so that the grid fills the GPU); the tiling follows Triton's matmul tutorial
with vLLM's grouped program order."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.int8_gemm.reference import scale_output
from kernelkit.ops.layers.triton_impl import _cast


@triton.jit
def _int8_scaled_mm_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, m, n, k, HAS_BIAS: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    blocks_m, blocks_n = tl.cdiv(m, BLOCK_M), tl.cdiv(n, BLOCK_N)
    in_group = GROUP_M * blocks_n
    first_m = pid // in_group * GROUP_M
    group_m = min(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mmask, nmask = offs_m < m, offs_n < n
    a_ptrs = a_ptr + offs_m[:, None].to(tl.int64) * k + offs_k[None, :]
    b_ptrs = b_ptr + offs_n[None, :].to(tl.int64) * k + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, k, BLOCK_K):
        kmask = offs_k < k - k0
        a = tl.load(a_ptrs, mask=mmask[:, None] & kmask[None, :], other=0)
        b = tl.load(b_ptrs, mask=kmask[:, None] & nmask[None, :], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    sa = tl.load(sa_ptr + offs_m, mask=mmask, other=0.0)
    sb = tl.load(sb_ptr + offs_n, mask=nmask, other=0.0)
    out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * n + offs_n[None, :]
    tl.store(c_ptrs, _cast(out, c_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :])


def launch_config(m: int, n: int, k: int, num_sms: int = 132) -> dict:
    """BLOCK_M/N/K, GROUP_M, num_warps and num_stages for an [m, k] x [k, n] int8 GEMM. M <= 16 (decode): one
    16-row block and the widest BLOCK_N that still gives every SM a program, so the weight streams through all
    of them (the H100 sweep of ``benches/bench_int8_gemm.py``: within 5% of the best of 36 configs at the decode
    shapes measured); larger M: square tiles, as the int8 tensor cores want."""
    if m <= 16:
        block_n = next((b for b in (64, 32) if triton.cdiv(n, b) >= num_sms), 16)
        return {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": 256, "GROUP_M": 1, "num_warps": 4, "num_stages": 5}
    if m <= 64:
        return {"BLOCK_M": 32 if m <= 32 else 64, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 8, "num_warps": 4,
                "num_stages": 4}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}


def int8_scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                   out_dtype: torch.dtype, bias: torch.Tensor | None = None, config: dict | None = None
                   ) -> torch.Tensor:
    """a int8 [M, K] and b int8 [N, K], both contiguous; scale_a fp32 [M, 1], scale_b fp32 [N, 1]; bias [N] or
    None -> [M, N] in ``out_dtype``: the reference's values exactly (int32 sums, then (acc * scale_a) * scale_b
    in fp32 without fused multiply-adds, + bias, one rounding to ``out_dtype``). ``config``: a launch config
    (``launch_config``'s keys), else the heuristic's."""
    m, k = a.shape
    n = b.shape[0]
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if m == 0 or n == 0:
        return out
    if k == 0:  # empty sums: the epilogue alone
        return scale_output(torch.zeros(m, n, device=a.device), scale_a, scale_b, out_dtype, bias)
    if config is None:
        sms = torch.cuda.get_device_properties(a.device).multi_processor_count if a.is_cuda else 132
        config = launch_config(m, n, k, sms)
    c = dict(config)
    grid = (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)
    _int8_scaled_mm_kernel[grid](a, b, out, scale_a, scale_b, bias if bias is not None else scale_b, m, n, k,
                                 HAS_BIAS=bias is not None, enable_fp_fusion=False, **c)
    return out
