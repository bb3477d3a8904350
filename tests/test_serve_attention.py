"""The Triton paged-attention kernels against the torch backend (Triton's interpreter without a GPU): decode
rows (split-KV kernel, ranges of the context empty or not), a whole prefill, a prefill chunk after cached
context, GQA with padded head groups, scattered blocks; and the ``kernelkit::paged_attention`` op."""

import pytest
import torch

from kernelkit.ops.attention import triton_impl
from kernelkit.ops.attention.ops import paged_attention
from kernelkit.ops.attention.reference import paged_attention_ref
from kernelkit.serve.attention.backend import AttentionMetadata
from kernelkit.serve.attention.torch_backend import TorchPagedAttention
from kernelkit.serve.attention.triton_backend import TritonPagedAttention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _scenario(q_ctx, heads=4, kv_heads=2, dim=64, block=16, num_blocks=40, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_blocks, generator=g).tolist()
    tables, slots, starts = [], [], [0]
    for q_len, ctx in q_ctx:
        n = -(-ctx // block)
        tables.append([perm.pop() for _ in range(n)])
        slots += [tables[-1][p // block] * block + p % block for p in range(ctx - q_len, ctx)]
        starts.append(starts[-1] + q_len)
    width = max(len(t) for t in tables)
    t = starts[-1]
    cache = torch.randn(2, num_blocks, block, kv_heads, dim, generator=g).to(dtype)
    meta = AttentionMetadata(torch.tensor(starts, dtype=torch.int32), torch.tensor([c for _, c in q_ctx],
                                                                                   dtype=torch.int32),
                             torch.tensor([x + [-1] * (width - len(x)) for x in tables], dtype=torch.int32),
                             torch.tensor(slots), max(q for q, _ in q_ctx), max(c for _, c in q_ctx))
    q = torch.randn(t, heads, dim, generator=g).to(dtype)
    k = torch.randn(t, kv_heads, dim, generator=g).to(dtype)
    v = torch.randn(t, kv_heads, dim, generator=g).to(dtype)
    return q, k, v, cache, meta


def _to(device, *xs):
    return [x.to(device) for x in xs]


@pytest.mark.parametrize("q_ctx, heads, kv_heads, num_blocks", [
    ([(1, 37), (1, 1), (1, 16)], 4, 2, 40),           # decode: 64 context ranges per head, most of them empty
    ([(1, 700), (1, 333)], 6, 2, 80),                 # decode, long contexts, GQA group of 3 (padded to 16)
    ([(20, 20), (33, 33)], 4, 2, 40),                 # whole prefills
    ([(7, 50), (12, 44), (1, 90)], 4, 2, 40),         # chunks after cached context (chunked prefill, prefix hits)
])
def test_triton_matches_torch_backend(q_ctx, heads, kv_heads, num_blocks):
    _check_against_torch(q_ctx, heads=heads, kv_heads=kv_heads, num_blocks=num_blocks)


def _check_against_torch(q_ctx, **scenario):
    q, k, v, cache, meta = _scenario(q_ctx, **scenario)
    ref_cache = cache.clone()
    ref = TorchPagedAttention().forward(q, k, v, ref_cache, meta, 0.125)
    meta_d = AttentionMetadata(*_to(DEVICE, meta.query_start_loc, meta.context_lens, meta.block_tables,
                                    meta.slot_mapping), meta.max_query_len, meta.max_context_len)
    qd, kd, vd, cd = _to(DEVICE, q, k, v, cache.clone())
    out = TritonPagedAttention().forward(qd, kd, vd, cd, meta_d, 0.125)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(cd.cpu(), ref_cache)  # the new tokens' K/V landed in the same slots


def test_store_kv_matches_torch_indexing_on_strided_views():
    """K and V as views of a fused [T, H + 2 KVH, D] projection (the engine's layout); a negative slot (padding)
    writes nothing."""
    from kernelkit.serve.attention.torch_backend import write_kv

    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, 4 + 2 * 3, 64, generator=g)
    k, v = qkv[:, 4:7], qkv[:, 7:]
    cache = torch.randn(2, 6, 16, 3, 64, generator=g)
    slots = torch.tensor([17, 3, 95, 40, -1])
    ref = cache.clone()
    write_kv(k[:4], v[:4], ref, slots[:4])
    out = cache.to(DEVICE)
    triton_impl.store_kv(k.to(DEVICE), v.to(DEVICE), out, slots.to(DEVICE))
    assert torch.equal(out.cpu(), ref)


def test_small_blocks_are_refused():
    q, k, v, cache, meta = _scenario([(1, 8)], block=8)
    with pytest.raises(ValueError, match="block_size >= 16"):
        TritonPagedAttention().forward(q, k, v, cache, meta, 0.1)


def test_decode_splits_depend_on_the_batch_shape_only():
    assert [triton_impl.decode_splits(b, 8) for b in (1, 4, 64, 256)] == [64, 16, 1, 1]
    assert triton_impl.decode_splits(3, 3) == 64  # 512 // 9 = 56 -> next power of two, capped


def test_op_on_cpu_matches_reference_checks_arguments_and_compiles():
    q, k, v, cache, meta = _scenario([(3, 40), (1, 17)])
    TorchPagedAttention().forward(q, k, v, cache, meta, 0.125)  # writes the new K/V
    args = (q, cache, meta.block_tables, meta.query_start_loc, meta.context_lens)
    ref = paged_attention_ref(*args, 0.125)
    assert torch.equal(paged_attention(*args, 0.125, meta.max_query_len), ref)
    compiled = torch.compile(paged_attention, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args, 0.125, meta.max_query_len), ref)
    with pytest.raises(ValueError, match="multiple of KVH"):
        paged_attention(q[:, :3], cache, *args[2:], 0.125, 3)
    with pytest.raises(ValueError, match="int32"):
        paged_attention(q, cache, meta.block_tables.long(), *args[3:], 0.125, 3)
    with pytest.raises(ValueError, match="kv_cache is torch.float16"):
        paged_attention(q, cache.half(), *args[2:], 0.125, 3)


@pytest.mark.parametrize("programs", [1, 12])  # one context range per (sequence, KV head); two
def test_decode_with_few_context_ranges(monkeypatch, programs):
    monkeypatch.setattr(triton_impl, "DECODE_PROGRAMS", programs)
    assert triton_impl.decode_splits(3, 2) == (1 if programs == 1 else 2)
    _check_against_torch([(1, 37), (1, 1), (1, 60)])
