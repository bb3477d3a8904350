"""The comparisons ``kernelkit bench`` runs: each returns one case per size, in the ``cases`` layout of the
benches' ``timings.json`` (``benches/conftest.py``: params, nbytes or flops, kernelkit's times and the peers' in
ms), so that ``benches/regress.py`` and ``benches/plots.py`` read what a user measured. Times are CUDA-graph
event medians over input sets rotated past the L2 cache (``kernelkit.ops.timing``), on random data.
"""

from __future__ import annotations

import torch

from kernelkit.ops.timing import input_sets, median_ms


def _case(params: dict, ours: dict, peers: dict, nbytes: int | None = None, flops: int | None = None) -> dict:
    return {"params": params, "nbytes": nbytes, "flops": flops, "ours": ours, "peers": peers}


def _try(fn, sets) -> float | None:
    try:
        return median_ms(fn, sets)
    except RuntimeError:  # a peer that refuses the shape (cuBLAS block-wise at M = 1, say)
        return None


def gemm(n: int, k: int, ms: list[int]) -> list[dict]:
    """Block-FP8 GEMM (128x128 weight blocks, 1x128 activation groups): ``w8a8_block_fp8_matmul`` against bf16
    cuBLAS (``x @ w.T``) and cuBLAS block-wise (``torch._scaled_mm``), per M. Raises ValueError when N or K is
    not a multiple of 128."""
    from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul
    from kernelkit.quant.fp8_block.format import quantize_weight

    if n % 128 or k % 128:
        raise ValueError(f"block-FP8 GEMM: N and K must be multiples of 128, got {n} and {k}")
    cases = []
    for m in ms:
        def make(seed, m=m):
            g = torch.Generator(device="cuda").manual_seed(seed)
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
            w = torch.randn(n, k, device="cuda", generator=g) * 0.02
            xq, xs = per_token_group_quant_fp8(x, 128, column_major_scales=True)
            return (xq, *quantize_weight(w), xs, x, w.bfloat16())

        sets = input_sets(make, m * k + n * k)
        ours = {"kernelkit": median_ms(lambda a, b, bs, a_s, x, w: w8a8_block_fp8_matmul(a, b, a_s, bs, [128, 128]),
                                       sets)}
        peers = {"bf16 cuBLAS": median_ms(lambda a, b, bs, a_s, x, w: x @ w.t(), sets)}
        blockwise = _try(lambda a, b, bs, a_s, x, w: torch._scaled_mm(a, b.t(), scale_a=a_s, scale_b=bs.t(),
                                                                     out_dtype=torch.bfloat16), sets)
        if blockwise is not None:
            peers["cuBLAS block-wise"] = blockwise
        cases.append(_case({"m": m, "n": n, "k": k}, ours, peers, flops=2 * m * n * k))
    return cases


def quant(hidden: int, tokens: list[int], group_size: int = 128) -> list[dict]:
    """``per_token_group_quant_fp8`` (bf16 in, FP8 and fp32 scales out) against the plain-torch reference, eager
    and under ``torch.compile``; nbytes is the minimum traffic (x read, q and scales written once). Raises
    ValueError when the group size does not divide the hidden size."""
    from kernelkit.ops import per_token_group_quant_fp8
    from kernelkit.ops.quant.reference import per_token_group_quant_8bit_ref

    if hidden % group_size:
        raise ValueError(f"per-token-group quant: group size {group_size} does not divide hidden size {hidden}")
    ref = lambda x: per_token_group_quant_8bit_ref(x, group_size, torch.float8_e4m3fn)  # noqa: E731
    compiled = torch.compile(ref, dynamic=False)
    cases = []
    for t in tokens:
        sets = input_sets(lambda seed, t=t: (torch.randn(t, hidden, device="cuda", dtype=torch.bfloat16,
                                                         generator=torch.Generator("cuda").manual_seed(seed)) * 4,),
                          t * hidden * 3)
        ours = {"kernelkit": median_ms(lambda x: per_token_group_quant_fp8(x, group_size), sets)}
        peers = {"torch": median_ms(ref, sets), "torch.compile": median_ms(compiled, sets)}
        cases.append(_case({"t": t, "h": hidden}, ours, peers, nbytes=t * hidden * 3 + t * hidden // group_size * 4))
    return cases


def moe(experts: int, top_k: int, hidden: int, inter: int, tokens: list[int]) -> list[dict]:
    """One MoE layer given its routing: ``fused_experts`` with bf16, int8 W8A8 and int4 W4A8 experts (random
    per-channel scales) against ``torch._grouped_mm`` with a torch token sort (bf16). Raises ValueError for an
    odd intermediate or hidden size (int4 packs output rows in pairs) or top_k > experts."""
    from kernelkit.ops.int4_pack import pack_int4
    from kernelkit.ops.moe.ops import fused_experts
    from kernelkit.ops.moe.reference import fused_moe_grouped_mm, select_experts

    if inter % 2 or hidden % 2 or not 1 <= top_k <= experts:
        raise ValueError(f"MoE: hidden and inter must be even and 1 <= top_k <= experts, got H={hidden}, "
                         f"I={inter}, top_k={top_k}, E={experts}")
    g = torch.Generator(device="cuda").manual_seed(0)
    w13 = torch.randn(experts, 2 * inter, hidden, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    w2 = torch.randn(experts, hidden, inter, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    q13, q2 = (torch.randint(-127, 128, w.shape, device="cuda", dtype=torch.int8, generator=g) for w in (w13, w2))
    s13 = torch.rand(experts, 2 * inter, device="cuda", generator=g) * 1e-4
    s2 = torch.rand(experts, hidden, device="cuda", generator=g) * 1e-4
    p13, p2 = pack_int4(q13 >> 4), pack_int4(q2 >> 4)
    cases = []
    for t in tokens:
        sets = []
        for _ in range(4):
            x = torch.randn(t, hidden, device="cuda", dtype=torch.bfloat16, generator=g)
            sets.append((x, *select_experts(torch.randn(t, experts, device="cuda", generator=g), top_k, True)))
        ours = {"bf16": median_ms(lambda x, wt, ids: fused_experts(x, w13, w2, wt, ids), sets),
                "W8A8": median_ms(lambda x, wt, ids: fused_experts(x, q13, q2, wt, ids, s13, s2), sets),
                "W4A8": median_ms(lambda x, wt, ids: fused_experts(x, p13, p2, wt, ids, s13, s2, int4=True), sets)}
        peers = {"torch._grouped_mm bf16": median_ms(lambda x, wt, ids: fused_moe_grouped_mm(x, w13, w2, wt, ids),
                                                     sets)}
        cases.append(_case({"tokens": t, "E": experts, "top_k": top_k, "H": hidden, "I": inter}, ours, peers))
    return cases
