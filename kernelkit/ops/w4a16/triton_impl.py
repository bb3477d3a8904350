"""Triton W4A16 GEMM on AutoAWQ's GEMM layout: y = x @ ((q - zero) * scale), fp32 accumulation.

Each program computes a BLOCK_M x BLOCK_N tile of y. Its K loop reads BLOCK_K rows of ``qweight`` (BLOCK_N / 8
int32 columns each), unpacks the nibbles in registers (AutoAWQ's order: column 8c + j sits at bits 4 * REV[j],
REV = [0, 4, 1, 5, 2, 6, 3, 7]), subtracts the group's zeros and multiplies its scales (BLOCK_K divides the
group, so one group a step), and feeds a [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N] dot in the activations' dtype.

Split-K (``SPLIT_K`` > 1, for decode-sized M, where the GEMM only streams the weight): the K steps are divided
among SPLIT_K programs per tile, each writing fp32 partials that the block-FP8 GEMM's deterministic reduce
kernel sums in split order. Ragged M, N and K are masked; N must be a multiple of 8 (the packing).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.gemm.triton_impl import _split_k_reduce_kernel


@triton.jit
def _expand8(packed):
    """[..., C] -> [..., 8C], each int32 repeated 8 times in place (the columns it packs)."""
    packed = tl.interleave(packed, packed)
    packed = tl.interleave(packed, packed)
    return tl.interleave(packed, packed)


@triton.jit
def _awq_gemm_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, y_ptr, M, N, K, GROUP,
    stride_xm, stride_xk, stride_qk, stride_zg, stride_sg, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = pid // num_n, pid % num_n
    k_steps = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_steps, SPLIT_K)
    first = tl.program_id(1) * per_split
    last = tl.minimum(first + per_split, k_steps)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m, mask_n = offs_m < M, offs_n < N
    shifts = ((offs_n % 8) // 2 + (offs_n % 2) * 4) * 4  # AutoAWQ's nibble of column n
    packed_n = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)  # each int32 loaded once, 16-byte vectors
    mask_p = packed_n < N // 8

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(first, last):
        k = step * BLOCK_K + offs_k
        mask_k = k < K
        x = tl.load(x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        qw = _expand8(tl.load(qw_ptr + k[:, None].to(tl.int64) * stride_qk + packed_n[None, :],
                              mask=mask_k[:, None] & mask_p[None, :], other=0))
        g = (step * BLOCK_K) // GROUP
        zeros = (_expand8(tl.load(qz_ptr + g * stride_zg + packed_n, mask=mask_p, other=0)) >> shifts) & 15
        scales = tl.load(s_ptr + g * stride_sg + offs_n, mask=mask_n, other=0.0)
        w = ((((qw >> shifts[None, :]) & 15) - zeros[None, :]).to(tl.float32) * scales[None, :].to(tl.float32))
        acc += tl.dot(x, w.to(x.dtype))

    if SPLIT_K > 1:  # y is the fp32 workspace [SPLIT_K, M, N] (contiguous); strides are those of one split
        y_ptr += tl.program_id(1).to(tl.int64) * M * N
    tl.store(y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def default_config(m: int, n: int, k: int, group_size: int) -> dict:
    """A launch config by shape, from the sweep in benches/bench_w4a16.py on an H200 (benches/RESULTS.md): at
    decode sizes 16 x 64 tiles, 128-deep K steps and K split 8 ways; from 64 rows 128 x 256 tiles on 8 warps."""
    if m <= 32:
        block_k = min(group_size, 128)
        split = max(1, min(triton.cdiv(k, block_k), 8))
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": block_k, "SPLIT_K": split, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": min(group_size, 64), "SPLIT_K": 1, "num_warps": 8,
            "num_stages": 3}


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
             config: dict | None = None) -> torch.Tensor:
    """[M, N] in x's dtype; shapes as ``kernelkit.ops.w4a16.ops.awq_gemm``."""
    m, k = x.shape
    n = scales.shape[1]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y
    config = config or default_config(m, n, k, group_size)
    if group_size % config["BLOCK_K"]:
        raise ValueError(f"BLOCK_K {config['BLOCK_K']} must divide the group size {group_size}")
    split = config["SPLIT_K"]
    dest = y if split == 1 else torch.empty(split, m, n, dtype=torch.float32, device=x.device)
    stride_ym, stride_yn = (y.stride(0), y.stride(1)) if split == 1 else (n, 1)
    grid = (triton.cdiv(m, config["BLOCK_M"]) * triton.cdiv(n, config["BLOCK_N"]), split)
    _awq_gemm_kernel[grid](
        x, qweight, qzeros, scales, dest, m, n, k, group_size,
        x.stride(0), x.stride(1), qweight.stride(0), qzeros.stride(0), scales.stride(0), stride_ym, stride_yn,
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"], SPLIT_K=split,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    if split > 1:
        block = 1024
        _split_k_reduce_kernel[(triton.cdiv(m * n, block),)](dest, y, m * n, n, y.stride(0), y.stride(1),
                                                             SPLIT_K=split, BLOCK=block, USE_PDL=False)
    return y
