"""Paged attention in Triton, for the GPU (and Triton's interpreter in CPU tests).

- ``_prefill_kernel``: program (sequence i, query head h, tile of BLOCK_M new tokens) walks the sequence's KV
  blocks up to the last key the tile may see (causal: key position <= query position), with an online softmax
  in fp32 (FlashAttention, Dao et al. 2022, arXiv 2205.14135). It takes any query length: whole prefills,
  chunks after cached context, mixed batches.
- ``_decode_split_kernel`` + ``_decode_reduce_kernel``: one new token per sequence. The context is cut into
  SPLITS contiguous ranges of blocks, one program each per (sequence, KV head), so that a batch of one still
  fills the GPU; each program serves all query heads of its KV head (GQA) at once and writes an unnormalized
  partial result with its running max and sum, which the second kernel merges (split-KV "flash decoding",
  Dao et al. 2023; vLLM's PagedAttention v2 does the same). SPLITS depends only on batch and head counts, so
  the launch is fixed for a captured CUDA graph; each program finds its range from the context length.

- ``_store_kv_kernel``: writes the new tokens' K and V into their cache slots in one launch (vLLM's
  ``reshape_and_cache``); K and V may be strided views of a fused projection.

The KV cache layout is ``kv_cache`` [2, num_blocks, block_size, KVH, D] (vLLM's PagedAttention).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.pdl import launch_kwargs, pdl_start

BLOCK_M = 16  # new tokens per prefill program (tl.dot needs >= 16 rows)
DECODE_PROGRAMS = 512  # split the context until about this many decode programs run (~4 per SM on an H100)


@triton.jit
def _prefill_kernel(
    q_ptr, out_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_ptr, context_lens_ptr, scale,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch, stride_bt,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pdl_start(USE_PDL)
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


@triton.jit
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, query_start_ptr, context_lens_ptr, scale,
    part_acc_ptr, part_max_ptr, part_sum_ptr,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    SPLITS: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pdl_start(USE_PDL)
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    num_heads = tl.num_programs(1) * GROUP
    ctx = tl.load(context_lens_ptr + seq)
    num_blocks = tl.cdiv(ctx, BLOCK_SIZE)
    per_split = tl.cdiv(num_blocks, SPLITS)
    first, last = split * per_split, tl.minimum((split + 1) * per_split, num_blocks)
    lanes = tl.arange(0, GROUP_PAD)
    head_ok = lanes < GROUP
    heads = kv_head * GROUP + lanes
    dims = tl.arange(0, HEAD_DIM)
    row = tl.load(query_start_ptr + seq).to(tl.int64)
    q = tl.load(q_ptr + row * stride_qt + heads[:, None] * stride_qh + dims[None, :], mask=head_ok[:, None],
                other=0.0)
    m = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    denom = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    slots = tl.arange(0, BLOCK_SIZE)
    for b in range(first, last):
        block = tl.load(block_tables_ptr + seq * stride_bt + b).to(tl.int64)
        base = block * stride_cb + kv_head * stride_ch
        k = tl.load(k_cache_ptr + base + slots[:, None] * stride_cs + dims[None, :])
        v = tl.load(v_cache_ptr + base + slots[:, None] * stride_cs + dims[None, :])
        s = tl.dot(q, tl.trans(k), input_precision="ieee").to(tl.float32) * scale
        s = tl.where((b * BLOCK_SIZE + slots)[None, :] < ctx, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: every block in range holds a key
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee").to(tl.float32)
        m = m_new
    part = (seq * num_heads + heads) * SPLITS + split  # [B, H, SPLITS] flattened; an empty range keeps -inf, 0
    tl.store(part_max_ptr + part, m, mask=head_ok)
    tl.store(part_sum_ptr + part, denom, mask=head_ok)
    tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=head_ok[:, None])


@triton.jit
def _decode_reduce_kernel(
    out_ptr, query_start_ptr, part_acc_ptr, part_max_ptr, part_sum_ptr, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    pdl_start(USE_PDL)
    seq, head = tl.program_id(0), tl.program_id(1)
    part = (seq * tl.num_programs(1) + head) * SPLITS + tl.arange(0, SPLITS)
    maxes = tl.load(part_max_ptr + part)
    global_max = tl.max(maxes, axis=0)
    weights = tl.where(maxes > float("-inf"), tl.exp(maxes - global_max), 0.0)
    denom = tl.sum(tl.load(part_sum_ptr + part) * weights, axis=0)
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM + dims[None, :])
    out = tl.sum(acc * weights[:, None], axis=0) / denom
    row = tl.load(query_start_ptr + seq).to(tl.int64)
    tl.store(out_ptr + row * stride_ot + head * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_cs, stride_ch, KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                     DIM_PAD: tl.constexpr, USE_PDL: tl.constexpr):
    pdl_start(USE_PDL)
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:  # a padding row
        return
    heads, dims = tl.arange(0, HEADS_PAD)[:, None], tl.arange(0, DIM_PAD)[None, :]
    mask = (heads < KV_HEADS) & (dims < HEAD_DIM)
    dst = slot * stride_cs + heads * stride_ch + dims
    k = tl.load(k_ptr + t * stride_kt + heads * stride_kh + dims, mask=mask)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    v = tl.load(v_ptr + t * stride_vt + heads * stride_vh + dims, mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store k/v [T, KVH, D] (unit last stride, any row/head strides) at their slots of a contiguous kv_cache
    [2, num_blocks, block_size, KVH, D]; slot_mapping [T] int64 (block * block_size + offset; rows with a
    negative slot are skipped). Same result as ``kernelkit.serve.attention.torch_backend.write_kv``."""
    if k.shape[0] == 0:
        return
    kv_heads, head_dim = kv_cache.shape[3], kv_cache.shape[4]
    flat = kv_cache.view(2, -1, kv_heads, head_dim)
    _store_kv_kernel[(k.shape[0],)](
        k, v, flat[0], flat[1], slot_mapping, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        flat.stride(1), flat.stride(2), KV_HEADS=kv_heads, HEADS_PAD=triton.next_power_of_2(kv_heads),
        HEAD_DIM=head_dim, DIM_PAD=triton.next_power_of_2(head_dim), **launch_kwargs(k.device),
    )


def decode_splits(num_seqs: int, num_kv_heads: int) -> int:
    """Context ranges per (sequence, KV head): a power of two, 1 to 64, so that about DECODE_PROGRAMS programs
    run. Depends only on the batch shape, never on context lengths (CUDA-graph replays keep their grid)."""
    return min(64, triton.next_power_of_2(max(1, DECODE_PROGRAMS // max(1, num_seqs * num_kv_heads))))


def paged_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                    query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float, max_query_len: int,
                    out: torch.Tensor) -> None:
    """Write attention of q [T, H, D] over the paged cache into ``out`` [T, H, D] (arguments as in
    ``reference.paged_attention_ref``). ``max_query_len`` (host int) picks the kernel: 1 -> split-KV decode,
    else prefill. Raises ValueError for block_size or head_dim below 16 (tl.dot)."""
    num_seqs, heads, head_dim = context_lens.shape[0], q.shape[1], q.shape[2]
    block_size, kv_heads = kv_cache.shape[2], kv_cache.shape[3]
    if block_size < 16 or head_dim < 16:
        raise ValueError("Triton paged attention needs block_size >= 16 and head_dim >= 16 (tl.dot)")
    if num_seqs == 0 or q.shape[0] == 0:
        return
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    common = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0))
    if max_query_len == 1:
        group = heads // kv_heads
        splits = decode_splits(num_seqs, kv_heads)
        part_acc = torch.empty(num_seqs, heads, splits, head_dim, dtype=torch.float32, device=q.device)
        part_max = torch.empty(num_seqs, heads, splits, dtype=torch.float32, device=q.device)
        part_sum = torch.empty_like(part_max)
        _decode_split_kernel[(num_seqs, kv_heads, splits)](
            q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale, part_acc, part_max, part_sum,
            q.stride(0), q.stride(1), *common,
            GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
            BLOCK_SIZE=block_size, SPLITS=splits, **launch_kwargs(q.device),
        )
        _decode_reduce_kernel[(num_seqs, heads)](
            out, query_start_loc, part_acc, part_max, part_sum, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, SPLITS=splits, **launch_kwargs(q.device),
        )
        return
    _prefill_kernel[(num_seqs, heads, triton.cdiv(max_query_len, BLOCK_M))](
        q, out, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), *common,
        GROUP=heads // kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, BLOCK_M=BLOCK_M,
        **launch_kwargs(q.device),
    )
