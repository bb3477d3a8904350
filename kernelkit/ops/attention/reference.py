"""Paged attention in plain torch: the CPU path and the reference for the Triton kernels. Scores and softmax in
fp32. Layout: vLLM's PagedAttention (Kwon et al., SOSP 2023, arXiv 2309.06180)."""

from __future__ import annotations

import torch


def paged_attention_ref(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                        query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of each sequence's new queries to its whole cached context, one sequence at a time.

    Args:
        q: [T, H, D], the new tokens of all sequences, flattened.
        kv_cache: [2, num_blocks, block_size, KVH, D] keys then values, the new tokens already written.
        block_tables: int32 [B, max_blocks], each sequence's blocks in order.
        query_start_loc: int32 [B + 1], row offsets of each sequence's new tokens in q.
        context_lens: int32 [B], tokens of each sequence in the cache, new ones included.
        scale: softmax scale (1 / sqrt(D) usually).

    Returns:
        [T, H, D] in q's dtype. Reads the lengths on the host.
    """
    out = torch.empty_like(q)
    block_size = kv_cache.shape[2]
    starts = query_start_loc.tolist()
    for i, ctx in enumerate(context_lens.tolist()):
        s, e = starts[i], starts[i + 1]
        if e == s:
            continue
        blocks = block_tables[i, : -(-ctx // block_size)].long()
        keys = kv_cache[0, blocks].flatten(0, 1)[:ctx].float()  # [ctx, KVH, D]
        values = kv_cache[1, blocks].flatten(0, 1)[:ctx].float()
        group = q.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", q[s:e].float(), keys) * scale
        q_pos = torch.arange(ctx - (e - s), ctx, device=q.device)
        scores.masked_fill_(torch.arange(ctx, device=q.device)[None, :] > q_pos[:, None], float("-inf"))
        out[s:e] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype)
    return out
