"""The attention backend interface and the per-step metadata every backend reads.

Paged KV cache layout, per layer: ``kv_cache`` [2, num_blocks, block_size, num_kv_heads, head_dim] (keys, then
values). A sequence's tokens live in the blocks of its ``block_tables`` row, in order; token position p is at
slot ``block_tables[i, p // block_size] * block_size + p % block_size``. Source of the design: vLLM's
PagedAttention (Kwon et al., SOSP 2023, arXiv 2309.06180).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class AttentionMetadata:
    """One forward step over a batch of sequences, new tokens flattened into T rows.

    Attributes:
        query_start_loc: int32 [B + 1], row offsets of each sequence's new tokens.
        context_lens: int32 [B], tokens of each sequence in the cache after this step (cached + new).
        block_tables: int32 [B, max_blocks], KV blocks of each sequence (-1 padded).
        slot_mapping: int64 [T], cache slot each new token's K and V are written to.
        max_query_len, max_context_len: host-side maxima, for kernel launch shapes.
    """

    query_start_loc: torch.Tensor
    context_lens: torch.Tensor
    block_tables: torch.Tensor
    slot_mapping: torch.Tensor
    max_query_len: int
    max_context_len: int


class AttentionBackend(Protocol):
    """Writes this step's K/V into the cache and attends each sequence's new queries to its whole context.
    ``capturable``: forward never synchronizes with the host, so it can be captured in a CUDA graph."""

    capturable: bool

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float) -> torch.Tensor:
        """q [T, H, D], k/v [T, KVH, D] -> out [T, H, D] (q's dtype), causal within each sequence."""
