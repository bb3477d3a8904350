"""Paged attention in plain torch: the CPU path, and the reference for GPU kernels. Scores and softmax in fp32."""

from __future__ import annotations

import torch

from kernelkit.serve.attention.backend import AttentionMetadata


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store k/v [T, KVH, D] at their slots of kv_cache [2, blocks, block_size, KVH, D]."""
    flat = kv_cache.view(2, -1, *kv_cache.shape[-2:])
    flat[0, slot_mapping] = k.to(kv_cache.dtype)
    flat[1, slot_mapping] = v.to(kv_cache.dtype)


class TorchPagedAttention:
    """One sequence at a time: gather its context from the blocks, then causal softmax attention."""

    capturable = False  # reads the lengths on the host

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        write_kv(k, v, kv_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        block_size = kv_cache.shape[2]
        starts = meta.query_start_loc.tolist()
        for i, ctx in enumerate(meta.context_lens.tolist()):
            s, e = starts[i], starts[i + 1]
            blocks = meta.block_tables[i, : -(-ctx // block_size)].long()
            keys = kv_cache[0, blocks].flatten(0, 1)[:ctx].float()  # [ctx, KVH, D]
            values = kv_cache[1, blocks].flatten(0, 1)[:ctx].float()
            group = q.shape[1] // keys.shape[1]
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
            scores = torch.einsum("qhd,khd->hqk", q[s:e].float(), keys) * scale
            q_pos = torch.arange(ctx - (e - s), ctx)
            scores.masked_fill_(torch.arange(ctx)[None, :] > q_pos[:, None], float("-inf"))
            out[s:e] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype)
        return out
