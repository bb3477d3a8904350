"""The GPU attention backend: the new tokens' K/V are written into the cache first (``store_kv``), so
chunked prefill and prefix-cache hits read their context from the same place as decode does; then
``kernelkit.ops.attention``'s Triton kernels (split-KV decode when every sequence feeds one token, the prefill
kernel otherwise). They are called directly rather than through the ``kernelkit::paged_attention`` op, so
that CPU tests run them in Triton's interpreter inside the engine too."""

from __future__ import annotations

import torch

from kernelkit.ops.attention import triton_impl
from kernelkit.serve.attention.backend import AttentionMetadata


class TritonPagedAttention:
    """Any query length: decode, prefill, chunked prefill, mixed batches."""

    capturable = True

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if kv_cache.shape[2] < 16 or q.shape[-1] < 16:
            raise ValueError("the Triton attention backend needs block_size >= 16 and head_dim >= 16 (tl.dot)")
        triton_impl.store_kv(k, v, kv_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        triton_impl.paged_attention(q, kv_cache, meta.block_tables, meta.query_start_loc, meta.context_lens, scale,
                                    meta.max_query_len, out)
        return out
