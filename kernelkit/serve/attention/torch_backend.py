"""Paged attention in plain torch: the CPU backend (``kernelkit.ops.attention.reference``)."""

from __future__ import annotations

import torch

from kernelkit.ops.attention.reference import paged_attention_ref
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
        return paged_attention_ref(q, kv_cache, meta.block_tables, meta.query_start_loc, meta.context_lens, scale)
