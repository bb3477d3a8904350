"""``moe_align_block_size`` in Triton: three launches, no host synchronisation (CUDA-graph safe), deterministic
(the order ``reference.moe_align_block_size_ref`` defines: ascending flat index within an expert).

1. per chunk of CHUNK (token, slot) pairs: how many go to each expert;
2. one program: the experts' padded group starts, each chunk's write offset per expert, every block's expert and
   the padded total;
3. per chunk: each pair's rank among the chunk's earlier pairs of its expert, and its write.

Up to CHUNK pairs (decode batches: T <= 16 at top-8) one program does all three and the fills, in one launch
(the three-launch path plus its output fills cost ~10 µs at T = 1 on an H100, mostly launches).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.moe import reference

CHUNK = 128


@triton.jit
def _count_kernel(ids_ptr, partial_ptr, numel, num_experts, CHUNK: tl.constexpr, EP: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * CHUNK + tl.arange(0, CHUNK)
    ids = tl.load(ids_ptr + offs, mask=offs < numel, other=-1)
    experts = tl.arange(0, EP)
    counts = tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), axis=0)
    tl.store(partial_ptr + pid * num_experts + experts, counts, mask=experts < num_experts)


@triton.jit
def _offsets_kernel(partial_ptr, chunk_offsets_ptr, expert_ids_ptr, total_ptr, num_chunks, num_experts, block_size,
                    num_blocks, EP: tl.constexpr, BLK: tl.constexpr):
    experts = tl.arange(0, EP)
    valid = experts < num_experts
    counts = tl.zeros((EP,), dtype=tl.int32)
    for c in range(num_chunks):
        counts += tl.load(partial_ptr + c * num_experts + experts, mask=valid, other=0)
    padded = (counts + block_size - 1) // block_size * block_size
    ends = tl.cumsum(padded, axis=0)
    running = ends - padded  # each expert's group start, then advanced past each chunk's pairs
    for c in range(num_chunks):
        tl.store(chunk_offsets_ptr + c * num_experts + experts, running, mask=valid)
        running += tl.load(partial_ptr + c * num_experts + experts, mask=valid, other=0)
    total = tl.sum(padded, axis=0)
    tl.store(total_ptr, total)
    for b0 in range(0, num_blocks, BLK):
        blocks = b0 + tl.arange(0, BLK)
        pos = blocks * block_size
        expert = tl.sum(((ends[None, :] <= pos[:, None]) & valid[None, :]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + blocks, tl.where(pos < total, expert, -1), mask=blocks < num_blocks)


@triton.jit
def _scatter_kernel(ids_ptr, chunk_offsets_ptr, sorted_ptr, numel, num_experts, CHUNK: tl.constexpr):
    pid = tl.program_id(0)
    idx = tl.arange(0, CHUNK)
    offs = pid * CHUNK + idx
    live = offs < numel
    ids = tl.load(ids_ptr + offs, mask=live, other=-1)
    earlier = (ids[:, None] == ids[None, :]) & (idx[None, :] < idx[:, None]) & live[None, :]
    rank = tl.sum(earlier.to(tl.int32), axis=1)
    base = tl.load(chunk_offsets_ptr + pid * num_experts + ids, mask=live, other=0)
    tl.store(sorted_ptr + base + rank, offs.to(tl.int32), mask=live)


@triton.jit
def _single_kernel(ids_ptr, sorted_ptr, expert_ids_ptr, total_ptr, numel, num_experts, block_size, length,
                   num_blocks, CHUNK: tl.constexpr, EP: tl.constexpr, BLK: tl.constexpr, FILL: tl.constexpr):
    idx = tl.arange(0, CHUNK)
    live = idx < numel
    ids = tl.load(ids_ptr + idx, mask=live, other=-1).to(tl.int32)
    experts = tl.arange(0, EP)
    valid = experts < num_experts
    counts = tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), axis=0)
    padded = (counts + block_size - 1) // block_size * block_size
    ends = tl.cumsum(padded, axis=0)
    total = tl.sum(padded, axis=0)
    tl.store(total_ptr, total)
    for b0 in range(0, num_blocks, BLK):
        blocks = b0 + tl.arange(0, BLK)
        pos = blocks * block_size
        expert = tl.sum(((ends[None, :] <= pos[:, None]) & valid[None, :]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + blocks, tl.where(pos < total, expert, -1), mask=blocks < num_blocks)
    for s0 in range(0, length, FILL):
        offs = s0 + tl.arange(0, FILL)
        tl.store(sorted_ptr + offs, tl.full((FILL,), 0, tl.int32) + numel, mask=offs < length)
    tl.debug_barrier()  # the sentinel fill is complete before the pairs land
    starts = ends - padded
    base = tl.sum(tl.where(ids[:, None] == experts[None, :], starts[None, :], 0), axis=1)
    earlier = (ids[:, None] == ids[None, :]) & (idx[None, :] < idx[:, None]) & live[None, :]
    rank = tl.sum(earlier.to(tl.int32), axis=1)
    tl.store(sorted_ptr + base + rank, idx, mask=live)


def moe_align_block_size(topk_ids: torch.Tensor, block_size: int, num_experts: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`kernelkit.ops.moe.reference.moe_align_block_size_ref` (same outputs, bit for bit)."""
    numel = topk_ids.numel()
    device = topk_ids.device
    length = reference.aligned_length(numel, block_size, num_experts)
    num_blocks = -(-length // block_size)
    if 0 < numel <= CHUNK:
        sorted_token_ids = torch.empty(length, dtype=torch.int32, device=device)
        expert_ids = torch.empty(num_blocks, dtype=torch.int32, device=device)
        total = torch.empty(1, dtype=torch.int32, device=device)
        ep = triton.next_power_of_2(num_experts)
        _single_kernel[(1,)](topk_ids.reshape(-1), sorted_token_ids, expert_ids, total, numel, num_experts,
                             block_size, length, num_blocks, CHUNK=CHUNK, EP=ep, BLK=max(16, 4096 // ep), FILL=1024)
        return sorted_token_ids, expert_ids, total
    sorted_token_ids = torch.full((length,), numel, dtype=torch.int32, device=device)
    expert_ids = torch.full((num_blocks,), -1, dtype=torch.int32, device=device)
    total = torch.zeros(1, dtype=torch.int32, device=device)
    if numel == 0:
        return sorted_token_ids, expert_ids, total
    ids = topk_ids.reshape(-1).to(torch.int32)
    chunks = triton.cdiv(numel, CHUNK)
    partial = torch.empty(chunks, num_experts, dtype=torch.int32, device=device)
    chunk_offsets = torch.empty_like(partial)
    ep = triton.next_power_of_2(num_experts)
    _count_kernel[(chunks,)](ids, partial, numel, num_experts, CHUNK=CHUNK, EP=ep)
    _offsets_kernel[(1,)](partial, chunk_offsets, expert_ids, total, chunks, num_experts, block_size, num_blocks,
                          EP=ep, BLK=max(16, 4096 // ep))
    _scatter_kernel[(chunks,)](ids, chunk_offsets, sorted_token_ids, numel, num_experts, CHUNK=CHUNK)
    return sorted_token_ids, expert_ids, total
