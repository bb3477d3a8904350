"""Mixture-of-experts in plain torch: top-k routing and the SwiGLU expert MLPs over stacked weights.

Weights as vLLM stacks them: ``w13`` [E, 2I, H] (gate rows 0..I-1, up rows I..2I-1), ``w2`` [E, H, I].
out[t] = sum_k topk_weights[t, k] * w2[e] @ (silu(gate_e x[t]) * up_e x[t]), e = topk_ids[t, k]
(Shazeer et al. 2017, arXiv 1701.06538; Qwen3-MoE's routing: softmax, top-k, optional renormalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernelkit.ops.int8_gemm.reference import int8_scaled_mm_ref
from kernelkit.ops.quant.reference import per_token_quant_int8_ref


def select_experts(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(topk_weights fp32 [T, k], topk_ids int64 [T, k]) from router logits [T, E]: softmax in fp32, the k
    largest, renormalised to sum to 1 when ``renormalize`` (Qwen3-MoE's ``norm_topk_prob``)."""
    probs = router_logits.float().softmax(-1)
    weights, ids = probs.topk(top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, ids


def _swiglu(h: torch.Tensor) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def fused_moe_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """The expert MLPs one expert at a time (the definition). x [T, H] -> [T, H] in x's dtype; experts that
    receive no token cost nothing; T = 0 gives an empty result."""
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in torch.unique(topk_ids).tolist():
        rows, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        y = _swiglu(x[rows] @ w13[e].t()) @ w2[e].t()
        out.index_add_(0, rows, y.float() * topk_weights[rows, slot, None])
    return out.to(x.dtype)


def fused_moe_w8a8_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, w13_scale: torch.Tensor,
                       w2_scale: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """int8 W8A8 experts (the definition): x quantized to int8 per token (symmetric, amax / 127), each expert's
    gate_up as an exact int8 GEMM times the token's and the channel's scales, rounded to x's dtype, SwiGLU, the
    result quantized per (token, slot) row, the down GEMM alike, the routing-weighted sum in fp32.

    Args:
        x: [T, H] bf16/fp16/fp32; w13: int8 [E, 2I, H]; w2: int8 [E, H, I]; w13_scale: fp32 [E, 2I] (or
            [E, 2I, 1]); w2_scale: fp32 [E, H] (or [E, H, 1]); topk_weights fp32 and topk_ids int [T, k].
    Returns: [T, H] in x's dtype.
    """
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    xq, xs = per_token_quant_int8_ref(x)
    for e in torch.unique(topk_ids).tolist():
        rows, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        h = int8_scaled_mm_ref(xq[rows], w13[e], xs[rows], w13_scale[e].reshape(-1, 1), x.dtype)
        aq, scale = per_token_quant_int8_ref(_swiglu(h))
        y = int8_scaled_mm_ref(aq, w2[e], scale, w2_scale[e].reshape(-1, 1), torch.float32)
        out.index_add_(0, rows, y * topk_weights[rows, slot, None])
    return out.to(x.dtype)


def fused_experts_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                      topk_ids: torch.Tensor, w13_scale: torch.Tensor | None = None,
                      w2_scale: torch.Tensor | None = None, int4: bool = False) -> torch.Tensor:
    """The ``fused_experts`` op's definition over its three weight types: float experts (``fused_moe_ref``; on
    the CPU ``fused_moe_grouped_mm`` where torch takes the dtype, the same function faster), int8 experts with
    scales (``fused_moe_w8a8_ref``), and packed int4 experts (``int4``: [E, I, H] and [E, H/2, I], unpacked to
    int8 first, msModelSlim's packing), arguments as ``ops.fused_experts``."""
    if w13_scale is None:
        fast = x.shape[0] and x.device.type == "cpu" and grouped_mm_supported(x)
        return (fused_moe_grouped_mm if fast else fused_moe_ref)(x, w13, w2, topk_weights, topk_ids)
    if int4:
        from kernelkit.ops.int4_pack import unpack_int4

        w13, w2 = unpack_int4(w13, w13_scale.shape[1]), unpack_int4(w2, w2_scale.shape[1])
    return fused_moe_w8a8_ref(x, w13, w2, w13_scale, w2_scale, topk_weights, topk_ids)


def fused_moe_dense(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                    topk_ids: torch.Tensor) -> torch.Tensor:
    """The same as :func:`fused_moe_ref` with every expert applied to every token and weighted by its routing
    weight (0 where the token did not choose it): E times the work, but no host synchronisation, so a CUDA
    graph can capture it (for activation dtypes ``torch._grouped_mm`` does not take)."""
    route = torch.zeros(x.shape[0], w13.shape[0], dtype=torch.float32, device=x.device)
    route.scatter_add_(1, topk_ids, topk_weights.float())
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in range(w13.shape[0]):
        out += (_swiglu(x @ w13[e].t()) @ w2[e].t()).float() * route[:, e, None]
    return out.to(x.dtype)


def grouped_mm_supported(x: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` takes these activations here (CPU: bf16 and fp32; CUDA: bf16)."""
    return hasattr(torch, "_grouped_mm") and (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32)
                                              or x.device.type == "cuda" and x.dtype == torch.bfloat16)


def fused_moe_grouped_mm(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                         topk_ids: torch.Tensor) -> torch.Tensor:
    """The same as :func:`fused_moe_ref` with two ``torch._grouped_mm`` calls: the (token, slot) pairs sorted
    by expert, one grouped GEMM for gate_up and one for down, then a weighted scatter-add back to tokens."""
    num_experts = w13.shape[0]
    flat = topk_ids.flatten()
    order = torch.argsort(flat, stable=True)
    # counts by index_add_, not bincount: bincount on CUDA reads its maximum back to the host (no graph capture)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=x.device).index_add_(0, flat, torch.ones_like(flat))
    offsets = counts.cumsum(0).to(torch.int32)
    tokens = order // topk_ids.shape[1]
    h = torch._grouped_mm(x[tokens], w13.transpose(1, 2), offs=offsets)
    y = torch._grouped_mm(_swiglu(h), w2.transpose(1, 2), offs=offsets)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    out.index_add_(0, tokens, y.float() * topk_weights.flatten()[order, None])
    return out.to(x.dtype)


def aligned_length(numel: int, block_size: int, num_experts: int) -> int:
    """Length of ``moe_align_block_size``'s sorted_token_ids for ``numel`` (token, slot) pairs: room for every
    expert's group padded to the block (numel * block_size when there are fewer pairs than experts)."""
    return numel * block_size if numel < num_experts else numel + num_experts * (block_size - 1)


def moe_align_block_size_ref(topk_ids: torch.Tensor, block_size: int, num_experts: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (token, slot) pairs grouped by expert, each expert's group padded to a multiple of ``block_size``, so
    that every block of a grouped GEMM reads one expert (vLLM's and sglang's ``moe_align_block_size``).

    Args:
        topk_ids: int [T, k], experts in 0..E-1.
        block_size: rows per GEMM block (the M tile).
        num_experts: E.

    Returns:
        sorted_token_ids: int32 [T*k + E*(block_size - 1)] (T*k * block_size when T*k < E): flat indices into
            ``topk_ids`` grouped by expert (ascending within an expert), each group padded with T*k (the
            sentinel) to a multiple of block_size; the tail is T*k too.
        expert_ids: int32 [ceil(len(sorted_token_ids) / block_size)]: each block's expert; -1 past the last.
        num_tokens_post_padded: int32 [1]: the padded groups' total length.
    """
    numel = topk_ids.numel()
    length = aligned_length(numel, block_size, num_experts)
    flat = topk_ids.flatten().long()
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device).index_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_size - 1) // block_size * block_size
    starts = padded.cumsum(0) - padded
    order = torch.argsort(flat, stable=True)
    rank = torch.arange(numel, device=flat.device) - (counts.cumsum(0) - counts)[flat[order]]
    sorted_token_ids = torch.full((length,), numel, dtype=torch.int32, device=flat.device)
    sorted_token_ids[starts[flat[order]] + rank] = order.to(torch.int32)
    blocks = -(-length // block_size)
    expert_ids = torch.full((blocks,), -1, dtype=torch.int32, device=flat.device)
    used = padded // block_size
    expert_ids[: int(used.sum())] = torch.repeat_interleave(torch.arange(num_experts, dtype=torch.int32,
                                                                         device=flat.device), used)
    return sorted_token_ids, expert_ids, padded.sum().to(torch.int32).reshape(1)
