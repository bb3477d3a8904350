"""MoE routing on the GPU (issue 12): kernelkit's Triton ``moe_align_block_size`` against the plain-torch
reference (argsort + index arithmetic, the kind of token sort vLLM's Python path runs) at Qwen3-30B-A3B's
routing (E = 128, top-8), block 64, random top-k ids; and one whole MoE layer at its shapes (H = 2048, I = 768,
bf16): the Triton grouped-GEMM ``fused_moe`` against the ``torch._grouped_mm`` path the engine runs today, with the
weight-read floor at T = 1 (shared/ANCHORS.md has vLLM's fused_moe at the same shapes). Event-timed CUDA-graph
medians."""

from __future__ import annotations

import pytest
import torch

from kernelkit.ops.int4_pack import pack_int4
from kernelkit.ops.moe import fused_moe_triton, reference, triton_impl
from kernelkit.ops.timing import copy_bandwidth_gbs, median_ms

pytestmark = pytest.mark.gpu
EXPERTS, TOP_K, BLOCK, HIDDEN, INTER = 128, 8, 64, 2048, 768


@pytest.mark.parametrize("tokens", [1, 16, 64, 512, 4096])
def bench_moe_align(record, tokens):
    sets = [(torch.rand(tokens, EXPERTS, device="cuda").topk(TOP_K, dim=-1).indices.to(torch.int32),)
            for _ in range(8)]
    ours = median_ms(lambda ids: triton_impl.moe_align_block_size(ids, BLOCK, EXPERTS), sets)
    row = {"T": tokens, "E": EXPERTS, "top-k": TOP_K, "block": BLOCK, "kernelkit Triton": f"{ours * 1e3:.1f} µs"}
    peers = {}
    try:  # the reference reads the used block count back to the host: not capturable, timed eagerly
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for ids, in sets * 3:
            start.record()
            reference.moe_align_block_size_ref(ids, BLOCK, EXPERTS)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        peers["torch reference (eager)"] = sorted(times)[len(times) // 2]
        row["torch reference (eager)"] = f"{peers['torch reference (eager)'] * 1e3:.1f} µs"
    except RuntimeError as e:
        row["torch reference (eager)"] = f"fails: {str(e)[:40]}"
    record("moe_align", row, ours={"triton": ours}, peers=peers)


@pytest.mark.parametrize("tokens", [1, 16, 64, 512, 4096])
def bench_fused_moe_layer(record, tokens):
    """bf16 experts through torch._grouped_mm and through kernelkit's Triton kernel; int8 W8A8 and int4 W4A8
    experts (per-channel scales, per-token int8 activations) through the same kernel."""
    g = torch.Generator(device="cuda").manual_seed(tokens)
    w13 = torch.randn(EXPERTS, 2 * INTER, HIDDEN, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    w2 = torch.randn(EXPERTS, HIDDEN, INTER, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    q13 = torch.randint(-127, 128, w13.shape, device="cuda", dtype=torch.int8, generator=g)
    q2 = torch.randint(-127, 128, w2.shape, device="cuda", dtype=torch.int8, generator=g)
    s13 = torch.rand(EXPERTS, 2 * INTER, device="cuda", generator=g) * 1e-4
    s2 = torch.rand(EXPERTS, HIDDEN, device="cuda", generator=g) * 1e-4
    p13, p2 = pack_int4(q13 >> 4), pack_int4(q2 >> 4)

    def make():
        x = torch.randn(tokens, HIDDEN, device="cuda", dtype=torch.bfloat16, generator=g)
        weights, ids = reference.select_experts(torch.randn(tokens, EXPERTS, device="cuda", generator=g), TOP_K, True)
        return x, weights, ids

    sets = [make() for _ in range(4)]
    grouped = median_ms(lambda x, wt, ids: reference.fused_moe_grouped_mm(x, w13, w2, wt, ids), sets)
    ours = median_ms(lambda x, wt, ids: fused_moe_triton.fused_moe(x, w13, w2, wt, ids), sets)
    int8 = median_ms(lambda x, wt, ids: fused_moe_triton.fused_moe(x, q13, q2, wt, ids, s13, s2), sets)
    int4 = median_ms(lambda x, wt, ids: fused_moe_triton.fused_moe(x, p13, p2, wt, ids, s13, s2, int4=True), sets)
    floor = TOP_K * 3 * HIDDEN * INTER * 2 / (copy_bandwidth_gbs() * 1e9)
    record("fused_moe_layer", {"T": tokens, "torch._grouped_mm bf16": f"{grouped * 1e3:.1f} µs",
                               "kernelkit bf16": f"{ours * 1e3:.1f} µs = {grouped / ours:.2f}x",
                               "kernelkit W8A8": f"{int8 * 1e3:.1f} µs = {ours / int8:.2f}x bf16",
                               "kernelkit W4A8": f"{int4 * 1e3:.1f} µs = {ours / int4:.2f}x bf16",
                               "bf16 weight-read floor": f"{floor * 1e6:.1f} µs" if tokens == 1 else "–"},
           ours={"bf16": ours, "W8A8": int8, "W4A8": int4}, peers={"torch._grouped_mm bf16": grouped})
