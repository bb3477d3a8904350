"""CUDA C++ W4A16 kernels on the tensor-core layout (``kernels_src/w4a16_gemm.cu[h]``), built through tvm-ffi.

``gemm``: tensor cores for M up to a few dozen tokens (blocks of 8 or 16 tokens, each re-reading the weight);
``dequantize``: W [N, K] in the activations' dtype, for cuBLAS at large M.
"""

from __future__ import annotations

import torch

from kernelkit.jit import KernelSpec, load

_T = {torch.bfloat16: "kk::bf16_t", torch.float16: "kk::fp16_t"}
GROUPS = (64, 128, 256)


def launch_config(m: int, n: int, k: int, group_size: int) -> tuple[int, int, int, int]:
    """(WARPS, MT, UNROLL, PF): warps per block splitting K, 8-token tiles per block, groups in flight per warp,
    iterations each warp prefetches ahead into L2.

    Fitted to the H200 sweeps of benches/bench_w4a16.py (its ``awq_gemm_sweep`` table, RESULTS.md 2026-12-02),
    counting in-flight work in 64-k chunks. Up to 8 tokens: 8 warps; 8 chunks per warp and no L2 prefetch where
    N <= 4096 (few blocks) or K >= 8192, else 4 chunks and the prefetch two iterations ahead (faster from
    N = 6144 up; our reading, not checked with ncu: fewer registers, so more resident blocks). Up to 16 tokens,
    no prefetch: 8 warps with 8 chunks for N <= 4096, with 4 chunks for N <= 8192, 4 warps with 4 chunks above.
    Above 16 tokens: 4 warps, 8 chunks, the prefetch. A warp with fewer groups than one iteration takes one
    group at a time.
    """
    full, half = _unroll(group_size, 8), _unroll(group_size, 4)
    if m <= 8:
        warps, mt, unroll, pf = (8, 1, full, 0) if n <= 4096 or k >= 8192 else (8, 1, half, 2)
    elif m <= 16:
        warps, mt, unroll, pf = (8, 2, full, 0) if n <= 4096 else (8, 2, half, 0) if n <= 8192 else (4, 2, half, 0)
    else:
        warps, mt, unroll, pf = 4, 2, full, 2
    return warps, mt, unroll if k // group_size >= warps * unroll else 1, pf


def _unroll(group_size: int, chunks: int) -> int:
    """Groups per warp iteration that put ``chunks`` 64-k chunks in flight (at least one group)."""
    return max(1, chunks * 64 // group_size)


def launch_configs(group_size: int) -> list[tuple[int, int, int, int]]:
    """Every config ``launch_config`` can choose at this group size (what ``warmup`` and the GPU check build):
    its choices at one M, N and K of each of its cases, and at K of one group (one group per iteration)."""
    cases = [(m, n, k) for m in (1, 16, 64) for n in (4096, 6144, 16384) for k in (group_size, 4096, 16384)]
    return sorted({launch_config(m, n, k, group_size) for m, n, k in cases})


def gemm_spec(dtype: torch.dtype, group_size: int, warps: int, mt: int, unroll: int, pf: int) -> KernelSpec:
    return KernelSpec("w4a16_mma_gemm", "tvm_ffi", "w4a16_gemm.cu", "kk::w4a16_mma_gemm",
                      (_T[dtype], str(group_size), str(warps), str(mt), str(unroll), str(pf)))


def dequant_spec(dtype: torch.dtype) -> KernelSpec:
    return KernelSpec("w4a16_mma_dequant", "tvm_ffi", "w4a16_gemm.cu", "kk::w4a16_mma_dequant", (_T[dtype],))


def unsupported(x: torch.Tensor, scales: torch.Tensor, group_size: int) -> str | None:
    """Why the CUDA kernels cannot take these arguments (None if they can)."""
    if x.dtype not in _T or scales.dtype != x.dtype:
        return f"activations {x.dtype} with scales {scales.dtype} (bf16 or fp16, equal)"
    if group_size not in GROUPS:
        return f"group size {group_size} not in {GROUPS}"
    if torch.cuda.get_device_capability(x.device) < (8, 0):
        return "mma.m16n8k16 with bf16 needs sm_80 or newer"
    return None


def gemm(x: torch.Tensor, qweight, zeros, scales, n: int, group_size: int,
         config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ W^T (x made contiguous with 16-byte aligned rows if it is not)."""
    m, k = x.shape
    if x.stride(-1) != 1 or x.data_ptr() % 16 or (m > 1 and (x.stride(0) * x.element_size()) % 16):
        x = x.contiguous()
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    load(gemm_spec(x.dtype, group_size, *(config or launch_config(m, n, k, group_size))))(x, qweight, scales, zeros, y)
    return y


def dequantize(qweight, zeros, scales, n: int) -> torch.Tensor:
    """W [N, K] in the scales' dtype: (q - z) * s in fp32, rounded once."""
    w = torch.empty(n, 64 * qweight.shape[1], dtype=scales.dtype, device=qweight.device)
    load(dequant_spec(scales.dtype))(qweight, scales, zeros, w)
    return w


def warmup_specs() -> list[KernelSpec]:
    """Every config the dispatch can choose, for bf16 and fp16 at group 128, and the dequantization."""
    return [gemm_spec(dtype, 128, *cfg) for dtype in _T for cfg in launch_configs(128)] + \
        [dequant_spec(dtype) for dtype in _T]
