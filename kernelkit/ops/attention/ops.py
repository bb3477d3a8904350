"""``paged_attention`` as a ``torch.library`` custom op: the Triton kernels on CUDA (the torch reference if
Triton cannot run, with one logged warning), the torch reference on CPU."""

from __future__ import annotations

import torch

from kernelkit.ops.attention import reference
from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.library import kernel_op


def _never(*args) -> None:
    return None


@kernel_op("paged_attention")
def _paged_attention_op(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                        query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float,
                        max_query_len: int) -> torch.Tensor:
    return reference.paged_attention_ref(q, kv_cache, block_tables, query_start_loc, context_lens, scale)


@_paged_attention_op.register_kernel("cuda")
def _paged_attention_cuda(q, kv_cache, block_tables, query_start_loc, context_lens, scale, max_query_len):
    out = torch.empty_like(q)
    args = (q, kv_cache, block_tables, query_start_loc, context_lens, scale)

    def triton(*_):
        triton_impl("kernelkit.ops.attention.triton_impl").paged_attention(*args, max_query_len, out)

    run_first("paged_attention", (("triton", _never, triton),
                                  ("torch", _never, lambda *_: out.copy_(reference.paged_attention_ref(*args)))))
    return out


@_paged_attention_op.register_fake
def _paged_attention_fake(q, kv_cache, block_tables, query_start_loc, context_lens, scale, max_query_len):
    return torch.empty_like(q)


def paged_attention(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                    query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float,
                    max_query_len: int) -> torch.Tensor:
    """Causal attention of each sequence's new tokens to its context in a paged KV cache.

    The new tokens' K/V must already be in the cache. On CUDA, ``max_query_len == 1`` (every sequence
    decodes one token) runs the split-KV decode kernel, anything else the prefill kernel; both are
    capturable in CUDA graphs. Layout and semantics: vLLM's PagedAttention (arXiv 2309.06180); the
    arithmetic is ``reference.paged_attention_ref``'s.

    Args:
        q: [T, H, D] bf16/fp16/fp32, the new tokens of all sequences.
        kv_cache: [2, num_blocks, block_size, KVH, D] (keys, values), q's dtype; H a multiple of KVH.
        block_tables: int32 [B, max_blocks], each sequence's blocks in order (unused entries ignored).
        query_start_loc: int32 [B + 1], row offsets of each sequence's new tokens in q.
        context_lens: int32 [B], tokens of each sequence in the cache, new ones included (>= its new tokens).
        scale: softmax scale.
        max_query_len: the largest number of new tokens of one sequence (host int).

    Returns:
        [T, H, D] in q's dtype.

    Raises:
        ValueError: inconsistent shapes, dtypes or devices; on CUDA also block_size or D below 16.
    """
    what = "paged_attention"
    if q.dim() != 3 or kv_cache.dim() != 5 or kv_cache.shape[0] != 2 or kv_cache.shape[-1] != q.shape[-1] or \
            q.shape[1] % kv_cache.shape[3]:
        raise ValueError(f"{what}: q must be [T, H, D] and kv_cache [2, blocks, block_size, KVH, D] with H a "
                         f"multiple of KVH; got {tuple(q.shape)} and {tuple(kv_cache.shape)}")
    if kv_cache.dtype != q.dtype:
        raise ValueError(f"{what}: kv_cache is {kv_cache.dtype}, q {q.dtype}")
    num_seqs = context_lens.shape[0]
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs or query_start_loc.shape != (num_seqs + 1,):
        raise ValueError(f"{what}: block_tables must be [B, max_blocks] and query_start_loc [B + 1] for "
                         f"B = {num_seqs} sequences; got {tuple(block_tables.shape)}, "
                         f"{tuple(query_start_loc.shape)}")
    if any(t.dtype != torch.int32 for t in (block_tables, query_start_loc, context_lens)):
        raise ValueError(f"{what}: block_tables, query_start_loc and context_lens must be int32")
    if len({t.device for t in (q, kv_cache, block_tables, query_start_loc, context_lens)}) != 1:
        raise ValueError(f"{what}: all tensors must be on one device")
    return torch.ops.kernelkit.paged_attention(q, kv_cache, block_tables, query_start_loc, context_lens, scale,
                                               int(max_query_len))
