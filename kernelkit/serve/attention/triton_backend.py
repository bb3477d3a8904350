"""Paged attention in Triton, for the GPU: one kernel for decode rows and prefill chunks alike.

Program (sequence i, query head h, tile of BLOCK_M new tokens): walk the sequence's KV blocks through its
block table up to the last key the tile may see (causal: key position <= query position), with an online
softmax in fp32 (FlashAttention, Dao et al. 2022, arXiv 2205.14135; paged layout as vLLM's PagedAttention).
K/V of the step's new tokens are written into the cache first (by torch indexing), so chunked prefill and
prefix-cache hits read their context from the same place as decode does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.serve.attention.backend import AttentionMetadata
from kernelkit.serve.attention.torch_backend import write_kv


@triton.jit
def _paged_attention_kernel(
    q_ptr, out_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_ptr, context_lens_ptr, scale,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch, stride_bt,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
):
    seq, head, tile = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    ctx = tl.load(context_lens_ptr + seq)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    q_pos = ctx - q_len + rows  # absolute position of each query token
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (q_start + rows)[:, None].to(tl.int64) * stride_qt + head * stride_qh + dims[None, :],
                mask=row_ok[:, None], other=0.0)
    kv_head = head // GROUP
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    denom = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    last_key = ctx - q_len + tl.minimum((tile + 1) * BLOCK_M, q_len)  # keys beyond this no row may see
    slots = tl.arange(0, BLOCK_SIZE)
    for start in range(0, last_key, BLOCK_SIZE):
        block = tl.load(block_tables_ptr + seq * stride_bt + start // BLOCK_SIZE).to(tl.int64)
        base = block * stride_cb + kv_head * stride_ch
        k = tl.load(k_cache_ptr + base + slots[:, None] * stride_cs + dims[None, :])
        v = tl.load(v_cache_ptr + base + slots[:, None] * stride_cs + dims[None, :])
        s = tl.dot(q, tl.trans(k), input_precision="ieee").to(tl.float32) * scale
        k_pos = start + slots
        visible = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] < ctx)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee").to(tl.float32)
        m = m_new
    out = acc / denom[:, None]
    tl.store(out_ptr + (q_start + rows)[:, None].to(tl.int64) * stride_ot + head * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


class TritonPagedAttention:
    """The GPU attention backend (any query length: decode, prefill, chunked prefill)."""

    BLOCK_M = 16
    capturable = True

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
        if kv_cache.shape[2] < 16 or q.shape[-1] < 16:
            raise ValueError("the Triton attention backend needs block_size >= 16 and head_dim >= 16 (tl.dot)")
        write_kv(k, v, kv_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        num_seqs, heads, head_dim = meta.context_lens.shape[0], q.shape[1], q.shape[2]
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        grid = (num_seqs, heads, triton.cdiv(meta.max_query_len, self.BLOCK_M))
        _paged_attention_kernel[grid](
            q, out, k_cache, v_cache, meta.block_tables, meta.query_start_loc, meta.context_lens, scale,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), meta.block_tables.stride(0),
            GROUP=heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_SIZE=k_cache.shape[1], BLOCK_M=self.BLOCK_M,
        )
        return out
