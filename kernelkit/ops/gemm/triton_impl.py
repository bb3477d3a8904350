"""Triton block-scaled FP8 GEMM: C = (A * As) @ (B * Bs)^T with fp32 accumulation.

Each program computes a BLOCK_M x BLOCK_N tile of C. Its K loop walks one quantization block (bk columns) per
step: a [BLOCK_M, bk] x [bk, BLOCK_N] FP8 dot on the tensor cores, scaled by the activation scales of those
rows and the weight scale of that (n-block, k-block), then accumulated. Ragged M, N and K are masked.
Launch configs come from tuned JSON files keyed like sglang's (``configs.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _w8a8_block_fp8_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_n, stride_bs_k,
    BLOCK_N_QUANT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)  # grouped ordering: programs sharing B tiles run together (L2 reuse)
    first_m = group * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % rows
    pid_n = (pid % (GROUP_M * num_n)) // rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_n[None, :].to(tl.int64) * stride_bn + offs_k[:, None] * stride_bk
    as_ptrs = as_ptr + offs_m * stride_as_m
    bs_ptrs = bs_ptr + (offs_n // BLOCK_N_QUANT) * stride_bs_n
    mask_m, mask_n = offs_m < M, offs_n < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_left = K - k0
        kb = k0 // BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=mask_n[None, :] & (offs_k[:, None] < k_left), other=0.0)
        a_s = tl.load(as_ptrs + kb * stride_as_k, mask=mask_m, other=0.0)
        b_s = tl.load(bs_ptrs + kb * stride_bs_k, mask=mask_n, other=0.0)
        acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, c, mask=mask_m[:, None] & mask_n[None, :])


def w8a8_block_fp8_matmul(a, b, a_scales, b_scales, block_size, out: torch.Tensor, config: dict) -> None:
    """Write C [M, N] = block-FP8 A [M, K] x B [N, K]^T into ``out``; ``config`` from configs.py."""
    m, k = a.shape
    n = b.shape[0]
    if m == 0 or n == 0:
        return
    block_n, block_k = block_size
    grid = (triton.cdiv(m, config["BLOCK_SIZE_M"]) * triton.cdiv(n, config["BLOCK_SIZE_N"]),)
    _w8a8_block_fp8_kernel[grid](
        a, b, out, a_scales, b_scales, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        a_scales.stride(0), a_scales.stride(1), b_scales.stride(0), b_scales.stride(1),
        BLOCK_N_QUANT=block_n, BLOCK_M=config["BLOCK_SIZE_M"], BLOCK_N=config["BLOCK_SIZE_N"], BLOCK_K=block_k,
        GROUP_M=config["GROUP_SIZE_M"], num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
