"""The fused MoE layer's grouped GEMMs in Triton, on the output of ``moe_align_block_size`` (the scheme of vLLM's
and sglang's ``fused_moe_kernel``; our own kernel): each program computes one BLOCK_M x BLOCK_N tile of one
expert's group, reading its activation rows through ``sorted_token_ids`` and writing them back to their
(token, slot) rows, so no gather or scatter copies are made. Padding rows (the sentinel T*k) are masked.

Three weight types, one kernel:

- bf16/fp16/fp32 experts: fp32 accumulation;
- int8 W8A8: int8 weights with one fp32 scale per output channel, activations quantized to int8 per row
  (token for gate_up, (token, slot) pair for down), int32 accumulation, both scales in the epilogue;
- int4 W4A8: as W8A8 with two int4 weights per int8 byte along the output dimension (msModelSlim's packing:
  the low nibble is the even row), unpacked to int8 in registers.

``fused_moe``: align, gate_up GEMM, SiLU-and-mul (fused with the down GEMM's int8 activation quantization for
the int8 weight types), down GEMM with the routing weights applied, the sum over the top-k slots. Launch configs
from ``configs.py`` (vLLM's JSON files).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.layers.ops import silu_and_mul
from kernelkit.ops.layers.triton_impl import _cast
from kernelkit.ops.moe import configs, triton_impl
from kernelkit.ops.quant.ops import per_token_quant_int8
from kernelkit.ops.quant.triton_impl import _amax_to_scale, _store_8bit

FUSED_ACT_MAX = 8192  # the widest SiLU-and-mul row the fused activation quantizer takes in one program


@triton.jit
def _grouped_gemm_kernel(a_ptr, w_ptr, c_ptr, a_scale_ptr, w_scale_ptr, topk_weights_ptr, sorted_ids_ptr,
                         expert_ids_ptr, post_padded_ptr, num_pairs, n, k, em, stride_am, stride_we, stride_wn,
                         stride_cm, stride_se, top_k: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr,
                         INT8: tl.constexpr, INT4: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    blocks_m, blocks_n = tl.cdiv(em, BLOCK_M), tl.cdiv(n, BLOCK_N)
    in_group = GROUP_M * blocks_n  # GROUP_M row blocks share their weight tiles in L2 (vLLM's swizzle)
    first_m = pid // in_group * GROUP_M
    group_m = min(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    if pid_m * BLOCK_M >= tl.load(post_padded_ptr):
        return
    pairs = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    live = pairs < num_pairs
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rows = (pairs // top_k).to(tl.int64)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :]
    if INT4:  # packed rows: byte row j holds output rows 2j (low nibble) and 2j + 1 (high nibble)
        offs_p = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        w_ptrs = w_ptr + expert * stride_we + offs_p[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        wmask_n = offs_p[None, :] < (n + 1) // 2
    else:
        w_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        wmask_n = offs_n[None, :] < n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if INT8 else tl.float32)
    for k0 in range(0, k, BLOCK_K):
        kmask = offs_k < k - k0
        a = tl.load(a_ptrs, mask=live[:, None] & kmask[None, :], other=0)
        w = tl.load(w_ptrs, mask=kmask[:, None] & wmask_n, other=0)
        if INT4:
            p = w.to(tl.int32)
            w = tl.interleave((p << 28) >> 28, (p << 24) >> 28).to(tl.int8)
        acc = tl.dot(a, w, acc, out_dtype=acc.dtype)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if INT8:
        a_scale = tl.load(a_scale_ptr + rows, mask=live, other=0.0)
        w_scale = tl.load(w_scale_ptr + expert * stride_se + offs_n, mask=offs_n < n, other=0.0)
        out = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]
    else:
        out = acc
    if MUL_ROUTED_WEIGHT:
        out *= tl.load(topk_weights_ptr + pairs, mask=live, other=0.0)[:, None]
    c_ptrs = c_ptr + pairs[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=live[:, None] & (offs_n[None, :] < n))


@triton.jit
def _silu_mul_quant_kernel(h_ptr, q_ptr, s_ptr, d, eps, BLOCK: tl.constexpr):
    """One row: silu(gate) * up rounded as ``silu_and_mul`` rounds it, then per-row int8 quantization as
    ``per_token_quant_int8`` does it (scale = max(amax, eps) / 127, round to nearest even, NaN -> 0)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(h_ptr + row * 2 * d + cols, mask=mask, other=0.0)
    up = tl.load(h_ptr + row * 2 * d + d + cols, mask=mask, other=0.0)
    gf = gate.to(tl.float32)
    silu = _cast(gf / (1 + tl.exp(-gf)), gate.dtype)
    act = _cast(silu.to(tl.float32) * up.to(tl.float32), gate.dtype).to(tl.float32)
    amax_bits = tl.max(tl.where(mask, act.to(tl.int32, bitcast=True) & 0x7FFFFFFF, 0), axis=0)
    scale = _amax_to_scale(amax_bits, eps, 127.0, False)
    tl.store(s_ptr + row, scale)
    _store_8bit(q_ptr + row * d + cols, act * tl.math.div_rn(1.0, scale), mask, 127.0, False)


def silu_and_mul_quant_int8(h: torch.Tensor, eps: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_token_quant_int8(silu_and_mul(h))`` in one pass: h [R, 2d] contiguous -> (int8 [R, d], fp32 [R, 1]);
    the same values as the two ops (for d above FUSED_ACT_MAX it runs them)."""
    rows, d = h.shape[0], h.shape[1] // 2
    if d > FUSED_ACT_MAX:
        return per_token_quant_int8(silu_and_mul(h), eps)
    q = torch.empty(rows, d, dtype=torch.int8, device=h.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=h.device)
    if rows:
        block = triton.next_power_of_2(d)
        _silu_mul_quant_kernel[(rows,)](h, q, scale, d, eps, BLOCK=block, num_warps=4 if block <= 2048 else 8)
    return q, scale


def grouped_gemm(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor, topk_weights: torch.Tensor | None,
                 sorted_token_ids: torch.Tensor, expert_ids: torch.Tensor, num_tokens_post_padded: torch.Tensor,
                 top_k: int, config: dict, a_scale: torch.Tensor | None = None, w_scale: torch.Tensor | None = None,
                 int4: bool = False) -> torch.Tensor:
    """out[p] = a[p // top_k] @ w[e(p)]^T (times topk_weights[p] when given) for every (token, slot) pair p.

    Args:
        a: [T, K] activations (top_k = k) or [T*k, K] per-pair rows (top_k = 1); contiguous rows; int8 with
            ``a_scale`` fp32 [rows, 1] for the int8 weight types.
        w: [E, N, K] expert weights, contiguous; int8 with ``w_scale`` fp32 [E, N] (W8A8), or with ``int4``
            [E, ceil(N/2), K] int8 of two int4 values each (low nibble: even output row) and ``w_scale`` [E, N].
        out: [T*k, N], written at the pairs' rows.
        topk_weights: fp32 [T, k] or None; the alignment's three outputs at block size BLOCK_SIZE_M.
        config: BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages (``configs.get_config``).
    """
    pairs = out.shape[0]
    n, k = out.shape[1], a.shape[1]
    int8 = w.dtype == torch.int8
    block_k = config["BLOCK_SIZE_K"] if k >= config["BLOCK_SIZE_K"] else triton.next_power_of_2(max(16, k))
    em = sorted_token_ids.shape[0]
    grid = (triton.cdiv(em, config["BLOCK_SIZE_M"]) * triton.cdiv(n, config["BLOCK_SIZE_N"]),)
    weights = topk_weights.reshape(-1) if topk_weights is not None else out
    _grouped_gemm_kernel[grid](
        a, w, out, a_scale if int8 else out, w_scale if int8 else out, weights, sorted_token_ids, expert_ids,
        num_tokens_post_padded, pairs, n, k, em, a.stride(0), w.stride(0), w.stride(1), out.stride(0),
        w_scale.stride(0) if int8 else 0, top_k=top_k, MUL_ROUTED_WEIGHT=topk_weights is not None, INT8=int8,
        INT4=int4, BLOCK_M=config["BLOCK_SIZE_M"], BLOCK_N=config["BLOCK_SIZE_N"], BLOCK_K=block_k,
        GROUP_M=config["GROUP_SIZE_M"], num_warps=config["num_warps"], num_stages=config["num_stages"])
    return out


def weight_dtype(w13: torch.Tensor, int4: bool) -> str | None:
    """The config files' dtype tag of these expert weights (None: bf16/fp16/fp32)."""
    return "int4_w4a8" if int4 else "int8_w8a8" if w13.dtype == torch.int8 else None


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, w13_scale: torch.Tensor | None = None, w2_scale: torch.Tensor | None = None,
              int4: bool = False, config: dict | None = None) -> torch.Tensor:
    """The same as ``reference.fused_moe_ref`` (float experts) or ``reference.fused_moe_w8a8_ref`` (int8 or int4
    experts with per-channel scales) through two grouped GEMMs.

    Args:
        x: [T, H] bf16/fp16/fp32; topk_weights fp32 and topk_ids int [T, k].
        w13: [E, 2I, H] and w2: [E, H, I] in x's dtype; or int8 with w13_scale fp32 [E, 2I] and w2_scale fp32
            [E, H]; or, with ``int4``, int8 [E, I, H] and [E, H/2, I] of packed int4 pairs (see ``grouped_gemm``).
        config: a launch config (default: ``configs.get_config`` for this GPU and shape).
    Returns: [T, H] in x's dtype; T = 0 gives an empty result.
    """
    tokens, top_k = topk_ids.shape
    num_experts, hidden, inter = w13.shape[0], x.shape[1], w2.shape[2]
    if tokens == 0:
        return x.new_zeros(x.shape)
    device = torch.cuda.get_device_name(x.device) if x.is_cuda else "cpu"  # cpu: Triton's interpreter
    config = config or configs.get_config(tokens, top_k, num_experts, inter, device, weight_dtype(w13, int4))
    align = triton_impl.moe_align_block_size(topk_ids, config["BLOCK_SIZE_M"], num_experts)
    quantized = w13.dtype == torch.int8
    h = x.new_empty(tokens * top_k, 2 * inter)
    a, a_scale = per_token_quant_int8(x.contiguous()) if quantized else (x.contiguous(), None)
    grouped_gemm(a, w13, h, None, *align, top_k, config, a_scale, w13_scale, int4)
    act, act_scale = silu_and_mul_quant_int8(h) if quantized else (silu_and_mul(h), None)
    y = torch.empty(tokens * top_k, hidden, dtype=torch.float32, device=x.device)
    grouped_gemm(act, w2, y, topk_weights.float(), *align, 1, config, act_scale, w2_scale, int4)
    return y.view(tokens, top_k, -1).sum(1).to(x.dtype)
