"""Triton block-scaled FP8 GEMM: C = (A * As) @ (B * Bs)^T with fp32 accumulation.

Each program computes a BLOCK_M x BLOCK_N tile of C. Its K loop walks one quantization block (bk columns) per
step: a [BLOCK_M, bk] x [bk, BLOCK_N] FP8 dot on the tensor cores, scaled by the activation scales of those
rows and the weight scale of that (n-block, k-block), then accumulated. Ragged M, N and K are masked.

Split-K (``SPLIT_K`` > 1, for decode-sized M): the K blocks are divided among SPLIT_K programs per tile, each
writing an fp32 partial tile to a workspace that a second kernel sums in a fixed order and casts (deterministic,
unlike atomics). At M = 1 a GEMM only streams the weight, and without the split a 4096-column output has too
few tiles to keep enough loads in flight on 132 SMs (the cuBLAS decode kernels split K the same way).
Launch configs come from tuned JSON files keyed like sglang's (``configs.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.pdl import launch_kwargs, pdl_start


@triton.jit
def _w8a8_block_fp8_kernel(
    a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_n, stride_bs_k,
    BLOCK_N_QUANT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pdl_start(USE_PDL)
    pid = tl.program_id(0)
    k_blocks = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_blocks, SPLIT_K)
    kb_first = tl.program_id(1) * per_split
    kb_last = tl.minimum(kb_first + per_split, k_blocks)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)  # grouped ordering: programs sharing B tiles run together (L2 reuse)
    first_m = group * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % rows
    pid_n = (pid % (GROUP_M * num_n)) // rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None].to(tl.int64) * stride_am + (kb_first * BLOCK_K + offs_k[None, :]) * stride_ak
    b_ptrs = b_ptr + offs_n[None, :].to(tl.int64) * stride_bn + (kb_first * BLOCK_K + offs_k[:, None]) * stride_bk
    as_ptrs = as_ptr + offs_m * stride_as_m
    bs_ptrs = bs_ptr + (offs_n // BLOCK_N_QUANT) * stride_bs_n
    mask_m, mask_n = offs_m < M, offs_n < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(kb_first, kb_last):
        k_left = K - kb * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=mask_n[None, :] & (offs_k[:, None] < k_left), other=0.0)
        a_s = tl.load(as_ptrs + kb * stride_as_k, mask=mask_m, other=0.0)
        b_s = tl.load(bs_ptrs + kb * stride_bs_k, mask=mask_n, other=0.0)
        acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if SPLIT_K > 1:  # c is the fp32 workspace [SPLIT_K, M, N] (contiguous); strides are those of one split
        c_ptr += tl.program_id(1).to(tl.int64) * M * N
    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, c, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _split_k_reduce_kernel(ws_ptr, c_ptr, MN, N, stride_cm, stride_cn, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr,
                           USE_PDL: tl.constexpr):
    """c[m, n] = sum over s of ws[s, m, n], summed in split order; ws is contiguous [SPLIT_K, M, N] fp32."""
    pdl_start(USE_PDL)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for _ in range(SPLIT_K):
        acc += tl.load(ws_ptr + offs, mask=mask, other=0.0)
        ws_ptr += MN
    row, col = offs // N, offs % N
    tl.store(c_ptr + row * stride_cm + col * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=mask)


def w8a8_block_fp8_matmul(a, b, a_scales, b_scales, block_size, out: torch.Tensor, config: dict) -> None:
    """Write C [M, N] = block-FP8 A [M, K] x B [N, K]^T into ``out``; ``config`` from configs.py."""
    m, k = a.shape
    n = b.shape[0]
    if m == 0 or n == 0:
        return
    block_n, block_k = block_size
    # more splits than K blocks would leave programs without work; K = 0 has no blocks to split
    split_k = max(1, min(config.get("SPLIT_K", 1), triton.cdiv(k, block_k)))
    dest = out if split_k == 1 else torch.empty(split_k, m, n, dtype=torch.float32, device=out.device)
    stride_cm, stride_cn = (out.stride(0), out.stride(1)) if split_k == 1 else (n, 1)
    grid = (triton.cdiv(m, config["BLOCK_SIZE_M"]) * triton.cdiv(n, config["BLOCK_SIZE_N"]), split_k)
    _w8a8_block_fp8_kernel[grid](
        a, b, dest, a_scales, b_scales, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), stride_cm, stride_cn,
        a_scales.stride(0), a_scales.stride(1), b_scales.stride(0), b_scales.stride(1),
        BLOCK_N_QUANT=block_n, BLOCK_M=config["BLOCK_SIZE_M"], BLOCK_N=config["BLOCK_SIZE_N"], BLOCK_K=block_k,
        GROUP_M=config["GROUP_SIZE_M"], SPLIT_K=split_k, num_warps=config["num_warps"],
        num_stages=config["num_stages"], **launch_kwargs(out.device),
    )
    if split_k > 1:
        block = 1024
        _split_k_reduce_kernel[(triton.cdiv(m * n, block),)](dest, out, m * n, n, out.stride(0), out.stride(1),
                                                             SPLIT_K=split_k, BLOCK=block,
                                                             **launch_kwargs(out.device))
