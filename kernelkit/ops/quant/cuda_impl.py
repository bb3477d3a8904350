"""CUDA C++ implementation of per-token-group quantization (``kernels_src/per_token_group_quant.cu[h]``).

Two ways to the same device code: tvm-ffi (nvcc-built host launcher, the primary path) and NVRTC (device
code only, launched from Python through cuda.core; for machines without nvcc).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from kernelkit.jit import KernelSpec, load

SUPPORTED_GROUPS = (16, 32, 64, 128, 256)
# Launch tuning, chosen from the launch-variant table in benches/RESULTS.md: the grid in waves of resident
# blocks (0: no cap, one block per GROUPS_PER_BLOCK groups), and groups per thread (see default_unroll).
DEFAULT_WAVES = 0
_IN = {torch.bfloat16: "kk::bf16_t", torch.float16: "kk::fp16_t", torch.float32: "float"}
_OUT = {torch.float8_e4m3fn: "kk::e4m3_t", torch.int8: "kk::s8_t"}
_BLOCK_THREADS = 256  # kQuantBlockThreads in the .cuh
MAX_GROUPS = 2**31  # the kernel's group indices are 32-bit


def div_magic(d: int) -> tuple[int, int]:
    """Multiplier and shift with ``n // d == (umulhi(n, mul) + n) >> shift`` for every 32-bit n (``div_by`` in
    ``kernels_src/common.cuh``; Granlund & Montgomery, PLDI 1994, Theorem 4.2). Mirrors ``div_magic`` in
    ``per_token_group_quant.cu``. Raises ValueError unless 1 <= d < 2**32."""
    if not 1 <= d < 2**32:
        raise ValueError(f"divisor {d} out of range [1, 2**32)")
    shift = (d - 1).bit_length()
    return (2**32 * (2**shift - d)) // d + 1, shift


def _vecs_per_group(x_dtype: torch.dtype, group_size: int) -> int:
    return group_size // (16 // torch.empty((), dtype=x_dtype).element_size())


def default_unroll(x_dtype: torch.dtype, group_size: int) -> int:
    """Groups per thread: four when a thread would otherwise have a single 16-byte load in flight (measured
    best for bf16, group 128, on an H200), else one."""
    vecs = _vecs_per_group(x_dtype, group_size)
    return 4 if vecs <= 16 else 1


def spec(backend: str, x_dtype: torch.dtype, q_dtype: torch.dtype, group_size: int, ue8m0: bool,
         unroll: int | None = None) -> KernelSpec:
    """The kernel spec of one specialization on ``backend`` (``tvm_ffi`` or ``nvrtc``)."""
    unroll = unroll or default_unroll(x_dtype, group_size)
    args = (_IN[x_dtype], _OUT[q_dtype], str(group_size), "true" if ue8m0 else "false", str(unroll))
    if backend == "tvm_ffi":
        return KernelSpec("per_token_group_quant_8bit", "tvm_ffi", "per_token_group_quant.cu",
                          "kk::per_token_group_quant_8bit", args)
    return KernelSpec("per_token_group_quant_8bit", "nvrtc", "per_token_group_quant.cuh",
                      "kk::per_token_group_quant_8bit_kernel", args)


def unsupported(x: torch.Tensor, group_size: int) -> str | None:
    """Why the CUDA kernel cannot take this input (None if it can)."""
    if group_size not in SUPPORTED_GROUPS:
        return f"group_size {group_size} not in {SUPPORTED_GROUPS}"
    if x.dtype not in _IN:
        return f"dtype {x.dtype}"
    if x.numel() // group_size >= MAX_GROUPS:
        return f"{x.numel() // group_size} groups; the kernel indexes fewer than {MAX_GROUPS}"
    if x.stride(-1) != 1 or x.data_ptr() % 16 or (x.shape[0] > 1 and (x.stride(0) * x.element_size()) % 16):
        return "x rows are not 16-byte aligned"
    return None


def group_quant_tvm_ffi(x, q, s, group_size: int, eps: float, scale_ue8m0: bool, unroll: int | None = None,
                        waves: int = DEFAULT_WAVES) -> None:
    """x [M, H] -> q [M, H], s [M, H/group] through the nvcc-built launcher."""
    fn = load(spec("tvm_ffi", x.dtype, q.dtype, group_size, scale_ue8m0, unroll))
    q_arg = q.view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q
    fn(x, q_arg, s, eps, waves)


def _groups_per_block(x_dtype: torch.dtype, group_size: int, unroll: int) -> int:
    """Mirrors GroupShape<T, GROUP, UNROLL>::kGroupsPerBlock in per_token_group_quant.cuh."""
    return _BLOCK_THREADS // min(_vecs_per_group(x_dtype, group_size), 16) * unroll


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def group_quant_nvrtc(x, q, s, group_size: int, eps: float, scale_ue8m0: bool, unroll: int | None = None,
                      waves: int = DEFAULT_WAVES) -> None:
    """Same kernel, compiled by NVRTC and launched through cuda.core."""
    m, h = x.shape
    num_groups = m * (h // group_size)
    if num_groups == 0:
        return
    unroll = unroll or default_unroll(x.dtype, group_size)
    run = load(spec("nvrtc", x.dtype, q.dtype, group_size, scale_ue8m0, unroll))
    blocks = -(-num_groups // _groups_per_block(x.dtype, group_size, unroll))
    if waves > 0:
        blocks = min(blocks, waves * run.max_active_blocks_per_sm(_BLOCK_THREADS, 0) * _sm_count(x.device.index))
    run((blocks,), (_BLOCK_THREADS,),
        np.uint64(x.data_ptr()), np.uint64(q.data_ptr()), np.uint64(s.data_ptr()),
        np.uint32(num_groups), np.uint32(h // group_size), *map(np.uint32, div_magic(h // group_size)),
        np.int64(x.stride(0)),
        np.int64(s.stride(0)), np.int64(s.stride(1)), np.float32(eps))


def warmup_specs() -> list[KernelSpec]:
    """The common specializations ``kernelkit jit warmup`` builds ahead of time."""
    out = []
    for backend in ("tvm_ffi", "nvrtc"):
        for x_dtype in (torch.bfloat16, torch.float16, torch.float32):
            for q_dtype in (torch.float8_e4m3fn, torch.int8):
                out.append(spec(backend, x_dtype, q_dtype, 128, False))
        out.append(spec(backend, torch.bfloat16, torch.float8_e4m3fn, 128, True))
    return out
