"""The fused MoE layer's grouped GEMMs in Triton, on the output of ``moe_align_block_size`` (the scheme of vLLM's
and sglang's ``fused_moe_kernel``; our own kernel): each program computes one BLOCK_M x BLOCK_N tile of one
expert's group, reading its activation rows through ``sorted_token_ids`` and writing them back to their
(token, slot) rows, so no gather or scatter copies are made. Padding rows (the sentinel T*k) are masked.

``fused_moe``: align, gate_up GEMM, SiLU-and-mul, down GEMM with the routing weights applied, the sum over the
top-k slots. Not yet the engine's default: it has run in Triton's interpreter only (no GPU measurement yet).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.layers.ops import silu_and_mul
from kernelkit.ops.moe import triton_impl


@triton.jit
def _grouped_gemm_kernel(a_ptr, w_ptr, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr, post_padded_ptr,
                         num_pairs, n, k, stride_am, stride_we, stride_wn, stride_cm, top_k: tl.constexpr,
                         MUL_ROUTED_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    blocks_n = tl.cdiv(n, BLOCK_N)
    pid_m, pid_n = pid // blocks_n, pid % blocks_n
    if pid_m * BLOCK_M >= tl.load(post_padded_ptr):
        return
    pairs = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    live = pairs < num_pairs
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rows = (pairs // top_k).to(tl.int64)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k, BLOCK_K):
        kmask = offs_k < k - k0
        a = tl.load(a_ptrs, mask=live[:, None] & kmask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=kmask[:, None] & (offs_n[None, :] < n), other=0.0)
        acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if MUL_ROUTED_WEIGHT:
        acc *= tl.load(topk_weights_ptr + pairs, mask=live, other=0.0)[:, None]
    c_ptrs = c_ptr + pairs[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=live[:, None] & (offs_n[None, :] < n))


def default_block_m(tokens: int, top_k: int, num_experts: int) -> int:
    """BLOCK_M from the pairs an expert gets on average (16 for decode batches; a placeholder until tuned)."""
    per_expert = tokens * top_k / num_experts
    return 16 if per_expert <= 16 else 32 if per_expert <= 32 else 64


def grouped_gemm(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor, topk_weights: torch.Tensor | None,
                 sorted_token_ids: torch.Tensor, expert_ids: torch.Tensor, num_tokens_post_padded: torch.Tensor,
                 top_k: int, block_m: int) -> torch.Tensor:
    """out[p] = a[p // top_k] @ w[e(p)]^T (times topk_weights[p] when given) for every (token, slot) pair p.

    Args:
        a: [T, K] activations (top_k = k) or [T*k, K] per-pair rows (top_k = 1); contiguous rows.
        w: [E, N, K] expert weights, contiguous; out: [T*k, N], written at the pairs' rows.
        topk_weights: fp32 [T, k] or None; the alignment's three outputs at block size ``block_m``.
    """
    pairs = out.shape[0]
    n, k = w.shape[1], w.shape[2]
    block_n, block_k = 64, 64 if k >= 64 else triton.next_power_of_2(max(16, k))
    grid = (triton.cdiv(sorted_token_ids.shape[0], block_m) * triton.cdiv(n, block_n),)
    weights = topk_weights.reshape(-1) if topk_weights is not None else out
    _grouped_gemm_kernel[grid](a, w, out, weights, sorted_token_ids, expert_ids, num_tokens_post_padded, pairs, n, k,
                               a.stride(0), w.stride(0), w.stride(1), out.stride(0), top_k=top_k,
                               MUL_ROUTED_WEIGHT=topk_weights is not None, BLOCK_M=block_m, BLOCK_N=block_n,
                               BLOCK_K=block_k)
    return out


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, block_m: int | None = None) -> torch.Tensor:
    """The same as ``reference.fused_moe_ref`` (x [T, H], w13 [E, 2I, H], w2 [E, H, I], fp32 topk_weights and
    int topk_ids [T, k]) -> [T, H] in x's dtype, through two grouped GEMMs; T = 0 gives an empty result."""
    tokens, top_k = topk_ids.shape
    num_experts, inter = w13.shape[0], w2.shape[2]
    if tokens == 0:
        return x.new_zeros(x.shape)
    block_m = block_m or default_block_m(tokens, top_k, num_experts)
    align = triton_impl.moe_align_block_size(topk_ids, block_m, num_experts)
    h = x.new_empty(tokens * top_k, 2 * inter)
    grouped_gemm(x.contiguous(), w13, h, None, *align, top_k, block_m)
    act = silu_and_mul(h)
    y = torch.empty(tokens * top_k, w2.shape[1], dtype=torch.float32, device=x.device)
    grouped_gemm(act, w2, y, topk_weights.float(), *align, 1, block_m)
    return y.view(tokens, top_k, -1).sum(1).to(x.dtype)
