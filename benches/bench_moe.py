"""MoE routing on the GPU (issue 12): kernelkit's Triton ``moe_align_block_size`` against the plain-torch
reference (argsort + index arithmetic, the kind of token sort vLLM's Python path runs) at Qwen3-30B-A3B's
routing (E = 128, top-8), block 64, random top-k ids; event-timed CUDA-graph medians. The whole fused MoE layer
(shared/ANCHORS.md's bars) follows with the grouped GEMM kernels."""

from __future__ import annotations

import pytest
import torch
from timing import median_ms

from kernelkit.ops.moe import reference, triton_impl

pytestmark = pytest.mark.gpu
EXPERTS, TOP_K, BLOCK = 128, 8, 64


@pytest.mark.parametrize("tokens", [1, 16, 64, 512, 4096])
def bench_moe_align(record, tokens):
    sets = [(torch.rand(tokens, EXPERTS, device="cuda").topk(TOP_K, dim=-1).indices.to(torch.int32),)
            for _ in range(8)]
    ours = median_ms(lambda ids: triton_impl.moe_align_block_size(ids, BLOCK, EXPERTS), sets)
    row = {"T": tokens, "E": EXPERTS, "top-k": TOP_K, "block": BLOCK, "kernelkit Triton": f"{ours * 1e3:.1f} µs"}
    try:  # the reference reads the used block count back to the host: not capturable, timed eagerly
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for ids, in sets * 3:
            start.record()
            reference.moe_align_block_size_ref(ids, BLOCK, EXPERTS)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        row["torch reference (eager)"] = f"{sorted(times)[len(times) // 2] * 1e3:.1f} µs"
    except RuntimeError as e:
        row["torch reference (eager)"] = f"fails: {str(e)[:40]}"
    record("moe_align", row)
