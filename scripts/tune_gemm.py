"""Tune the Triton block-FP8 GEMM on this GPU and write configs in sglang's JSON naming
(kernelkit/ops/gemm/configs/N=...,K=...,device_name=...,dtype=fp8_w8a8,block_shape=[128, 128].json).

Usage (on a GPU machine): python scripts/tune_gemm.py [N,K ...] [--m M ...]
(default: the shapes and batch sizes of benches/bench_gemm.py). With --m, only those batch sizes are tuned and
the file is merged into an existing one (this device's, else a copy of the same chip's other device's).
At M >= 16 each winner is also timed against cuBLAS block-wise and marked ``faster_than_cublas`` if it beat it
by more than 3% (the dispatch then runs Triton at that M).
Every candidate is checked against the reference before it is timed (CUDA-graph medians, benches/timing.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
from kernelkit.ops import per_token_group_quant_fp8  # noqa: E402
from kernelkit.ops.gemm import configs, reference, scaled_mm, triton_impl  # noqa: E402
from kernelkit.ops.timing import input_sets, median_ms  # noqa: E402
from kernelkit.ops.tuned_devices import devices_to_try  # noqa: E402
from kernelkit.quant.fp8_block.format import quantize_weight  # noqa: E402

MS = (1, 16, 64, 256, 1024, 4096)


def candidates(m: int) -> list[dict]:
    """Launch configs worth timing at batch size m: weight-streaming shapes (narrow N tiles, deep pipelines, K
    split over several programs) for decode, wgmma-sized tiles for prefill."""
    if m <= 16:
        space = itertools.product((16,), (16, 32, 64), (1,), (2, 4), (4, 6), (1, 2, 4, 8))
    elif m <= 256:  # K split too: thin shapes have few output tiles at these M (where cuBLAS block-wise loses)
        space = [c for c in itertools.product((16, 32, 64), (64, 128), (8,), (4,), (3, 4, 6), (1, 2, 4))
                 if c[0] <= m and (m <= 64 or c[0] >= 32) and (m <= 64 or c[5] <= 2)]
    else:
        space = itertools.product((64, 128), (128, 256), (8, 32), (4, 8), (3, 4), (1,))
    return [{"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": gm, "num_warps": w,
             "num_stages": st} | ({"SPLIT_K": sk} if sk > 1 else {}) for bm, bn, gm, w, st, sk in space]


def tune(n: int, k: int, ms) -> dict[int, dict]:
    best = {}

    def make(seed):  # distinct weights per set, so that small shapes are not timed out of L2
        g = torch.Generator(device="cuda").manual_seed(seed)
        return quantize_weight(torch.randn(n, k, device="cuda", generator=g) * 0.02)

    weights = input_sets(make, n * k)
    for m in ms:
        a, a_s = per_token_group_quant_fp8(torch.randn(m, k, device="cuda", dtype=torch.bfloat16), 128,
                                           column_major_scales=True)
        b, b_s = weights[0]
        ref = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), torch.float32)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        timings = []
        for cfg in candidates(m):
            try:
                triton_impl.w8a8_block_fp8_matmul(a, b, a_s, b_s, (128, 128), out, cfg)
                if not torch.allclose(out.float(), ref, rtol=1e-2, atol=1e-2):
                    continue
                sets = [(a, wb, a_s, ws, (128, 128), out, cfg) for wb, ws in weights]
                timings.append((median_ms(triton_impl.w8a8_block_fp8_matmul, sets), cfg))
            except Exception:  # a config Triton cannot compile (shared memory, registers): skip it
                continue
        ms, cfg = min(timings, key=lambda t: t[0])
        cublas = ""
        if scaled_mm.unsupported(a, b, a_s, (128, 128)) is None and m >= 16:  # cuBLAS refuses M = 1
            sets = [(a, wb, a_s, ws, torch.bfloat16) for wb, ws in weights]
            cublas_ms = median_ms(scaled_mm._scaled_mm, sets)
            # a win inside the timing noise (a few %) is no reason to leave cuBLAS
            cfg = cfg | {"faster_than_cublas": ms < 0.97 * cublas_ms}
            cublas = f", cuBLAS block-wise {cublas_ms * 1e3:.1f} µs"
        best[m] = cfg
        print(f"N={n} K={k} M={m}: {ms * 1e3:.1f} µs {2 * m * n * k / ms / 1e9:.0f} TFLOP/s "
              f"{n * k / ms / 1e6:.0f} GB/s of weights{cublas} {cfg}", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help="N,K pairs")
    parser.add_argument("--m", type=int, action="append", help="batch sizes to tune (repeatable)")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in arg.split(",")) for arg in args.shapes] or [
        (4096, 4096), (14336, 4096), (4096, 14336), (7168, 16384), (2112, 7168)]
    for n, k in shapes:
        configs.CONFIG_DIR.mkdir(exist_ok=True)
        device = torch.cuda.get_device_name()
        path = configs.CONFIG_DIR / configs.config_file_name(n, k, device, (128, 128))
        # with --m: merged into this device's file, else into a copy of its chip sibling's (which it replaces)
        base = next((p for p in (configs.CONFIG_DIR / configs.config_file_name(n, k, d, (128, 128))
                                 for d in devices_to_try(device)) if p.is_file()), None)
        table = json.loads(base.read_text()) if args.m and base else {}
        table.update({str(m): cfg for m, cfg in tune(n, k, args.m or MS).items()})
        path.write_text(json.dumps(dict(sorted(table.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
