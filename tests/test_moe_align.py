"""``moe_align_block_size``: the reference against the definition written out expert by expert (vLLM's golden
test's semantics: groups by expert, padded with T*k to the block size, -1 for unused blocks), the Triton kernels
against the reference bit for bit (Triton's interpreter on CPU; the GPU when there is one), and the op's fake
shapes and errors."""

import pytest
import torch

from kernelkit.ops.moe import reference
from kernelkit.ops.moe.ops import moe_align_block_size

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [(0, 8, 128, 64), (1, 8, 128, 16), (3, 2, 4, 4), (5, 1, 3, 7), (37, 3, 10, 16), (130, 2, 8, 1),
         (300, 8, 128, 64), (257, 4, 60, 32)]


def _topk_ids(tokens, k, experts, seed, skew=False, dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    if skew:  # half the experts get nothing, one gets most pairs
        weights = torch.zeros(experts)
        weights[: max(1, experts // 2)] = torch.rand(max(1, experts // 2), generator=g)
        weights[0] = 10.0
        rows = [torch.multinomial(weights + 1e-9 * (weights > 0), k, generator=g) for _ in range(tokens)]
    else:
        rows = [torch.randperm(experts, generator=g)[:k] for _ in range(tokens)]
    return (torch.stack(rows) if tokens else torch.empty(0, k, dtype=torch.long)).to(dtype)


def _definition(topk_ids, block_size, num_experts):
    flat = topk_ids.flatten().tolist()
    numel = len(flat)
    length = numel * block_size if numel < num_experts else numel + num_experts * (block_size - 1)
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        group = [i for i, x in enumerate(flat) if x == e]
        if group:
            padded = -(-len(group) // block_size) * block_size
            sorted_ids += group + [numel] * (padded - len(group))
            expert_ids += [e] * (padded // block_size)
    total = len(sorted_ids)
    sorted_ids += [numel] * (length - total)
    expert_ids += [-1] * (-(-length // block_size) - len(expert_ids))
    return torch.tensor(sorted_ids, dtype=torch.int32), torch.tensor(expert_ids, dtype=torch.int32), \
        torch.tensor([total], dtype=torch.int32)


@pytest.mark.parametrize("skew", [False, True])
@pytest.mark.parametrize("tokens, k, experts, block", CASES)
def test_reference_is_the_definition(tokens, k, experts, block, skew):
    ids = _topk_ids(tokens, k, experts, tokens + experts, skew)
    for ours, expected in zip(reference.moe_align_block_size_ref(ids, block, experts),
                              _definition(ids, block, experts), strict=True):
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("skew", [False, True])
@pytest.mark.parametrize("tokens, k, experts, block", CASES)
def test_triton_kernels_match_the_reference(tokens, k, experts, block, skew, dtype):
    from kernelkit.ops.moe import triton_impl

    ids = _topk_ids(tokens, k, experts, 7 * tokens + k, skew, dtype)
    expected = reference.moe_align_block_size_ref(ids, block, experts)
    for ours, ref in zip(triton_impl.moe_align_block_size(ids.to(DEVICE), block, experts), expected, strict=True):
        assert ours.dtype == torch.int32 and torch.equal(ours.cpu(), ref)


def test_op_dispatches_fakes_and_rejects_bad_input():
    from torch._subclasses.fake_tensor import FakeTensorMode

    ids = _topk_ids(9, 2, 5, 0).to(DEVICE)
    for ours, ref in zip(moe_align_block_size(ids, 4, 5), reference.moe_align_block_size_ref(ids.cpu(), 4, 5),
                         strict=True):
        assert torch.equal(ours.cpu(), ref)
    with FakeTensorMode():
        shapes = [tuple(t.shape) for t in moe_align_block_size(torch.empty(5, 8, dtype=torch.int64), 16, 128)]
    assert shapes == [(640,), (40,), (1,)]  # 40 < 128 pairs: 40 * 16 rows
    with pytest.raises(ValueError, match="topk_ids must be int32 or int64"):
        moe_align_block_size(torch.zeros(3, 2), 4, 5)
    with pytest.raises(ValueError, match="block_size and num_experts must be >= 1, got 0 and 5"):
        moe_align_block_size(ids, 0, 5)
