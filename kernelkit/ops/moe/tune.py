"""Tuning the Triton fused MoE layer on this GPU (``kernelkit tune moe``): for each token count, every launch
config of a small space is checked against the reference and timed over one whole layer (align, gate_up,
SiLU-and-mul, down, weighted sum; CUDA-graph medians, ``kernelkit.ops.timing``), and the fastest is written to
a JSON file named and shaped as vLLM's (``configs.py``). Random weights and routing; int weights for the
quantized types."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from kernelkit.ops.int4_pack import pack_int4
from kernelkit.ops.moe import configs, fused_moe_triton, reference


def candidates(tokens: int, top_k: int, num_experts: int) -> list[dict]:
    """Launch configs worth timing: 16-row M tiles with a choice of N and K tiles and pipeline depths while an
    expert gets few rows (decode), larger tiles with L2 grouping for prefill."""
    if tokens * top_k <= 2 * num_experts:
        space = itertools.product((16,), (32, 64, 128), (64, 128, 256), (1,), (4,), (3, 4))
    elif tokens * top_k <= 16 * num_experts:
        space = itertools.product((16, 32, 64), (64, 128), (64, 128), (1,), (4,), (3, 4))
    else:
        space = itertools.product((64, 128), (128, 256), (64, 128), (8,), (4, 8), (3,))
    return [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k, "GROUP_SIZE_M": gm, "num_warps": w,
             "num_stages": st} for m, n, k, gm, w, st in space]


def _layer(num_experts: int, hidden: int, inter: int, dtype: str | None, seed: int) -> tuple:
    """Random experts of the type: ((w13, w2), fused_moe's scale arguments, the unpacked int weights or None)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    shapes = ((num_experts, 2 * inter, hidden), (num_experts, hidden, inter))
    if dtype is None:
        return tuple(torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02 for s in shapes), {}, None
    limit = 127 if dtype == "int8_w8a8" else 7
    q = [torch.randint(-limit, limit + 1, s, device="cuda", dtype=torch.int8, generator=g) for s in shapes]
    scales = [torch.rand(s[:2], device="cuda", generator=g) * 0.1 / limit / s[2] ** 0.5 for s in shapes]
    weights = (pack_int4(q[0]), pack_int4(q[1])) if dtype == "int4_w4a8" else tuple(q)
    return weights, {"w13_scale": scales[0], "w2_scale": scales[1], "int4": dtype == "int4_w4a8"}, q


def tune(num_experts: int, hidden: int, inter: int, top_k: int, dtype: str | None, tokens: Sequence[int],
         log: Callable[[str], None] = print) -> dict[int, dict]:
    """{T: the fastest correct config} for experts of this shape and type (``configs.DTYPES``) on this GPU.

    Raises:
        RuntimeError: without a CUDA GPU, or when no candidate matches the reference at some T.
    """
    from kernelkit.ops.timing import median_ms

    if not torch.cuda.is_available():
        raise RuntimeError("kernelkit tune moe needs a CUDA GPU")
    (w13, w2), extra, ints = _layer(num_experts, hidden, inter, dtype, 0)
    best = {}
    for t in tokens:
        g = torch.Generator(device="cuda").manual_seed(t)
        sets = []
        for _ in range(4):
            x = torch.randn(t, hidden, device="cuda", dtype=torch.bfloat16, generator=g)
            logits = torch.randn(t, num_experts, device="cuda", generator=g)
            sets.append((x, *reference.select_experts(logits, top_k, True)))
        x, wt, ids = sets[0]
        if ints is None:
            expected = reference.fused_moe_grouped_mm(x, w13, w2, wt, ids).float()
        else:
            expected = reference.fused_moe_w8a8_ref(x, ints[0], ints[1], extra["w13_scale"], extra["w2_scale"], wt,
                                                    ids).float()
        tol = 3e-2 * expected.abs().max().item()
        timings = []
        for cfg in candidates(t, top_k, num_experts):
            def run(x, wt, ids, cfg=cfg):
                return fused_moe_triton.fused_moe(x, w13, w2, wt, ids, config=cfg, **extra)
            try:
                err = (run(x, wt, ids).float() - expected).abs().max().item()
                if not err <= tol:
                    log(f"T={t} {cfg}: wrong (max error {err:.3g})")
                    continue
                timings.append((median_ms(run, sets), cfg))
            except Exception as e:  # a config Triton cannot build here (shared memory, registers): skip it
                log(f"T={t} {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
        if not timings:
            raise RuntimeError(f"no launch config matched the reference at T={t}")
        ms, best[t] = min(timings, key=lambda tc: tc[0])
        log(f"T={t}: {ms * 1e3:.1f} µs with {best[t]} (default "
            f"{configs.default_config(t, top_k, num_experts)})")
    return best


def write(table: dict[int, dict], num_experts: int, inter: int, dtype: str | None, out_dir: Path) -> Path:
    """Write (merging into an existing file) the tuned table under vLLM's file name for this GPU; returns it."""
    path = out_dir / configs.config_file_name(num_experts, inter, torch.cuda.get_device_name(), dtype)
    old = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**old, **{str(t): cfg for t, cfg in table.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(merged.items(), key=lambda kv: int(kv[0]))), indent=2) + "\n")
    tmp.replace(path)
    return path
