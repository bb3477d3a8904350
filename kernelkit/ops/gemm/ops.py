"""``w8a8_block_fp8_matmul``: block-scaled FP8 GEMM as a ``torch.library`` custom op.

On CUDA tensors: cuBLAS block-wise (``torch._scaled_mm``) for shape classes where a one-time probe agrees with
the Triton kernel and no tuned Triton config was timed faster (``configs.faster_than_cublas``), else the Triton
kernel, else the reference (each fallback logged once); on CPU the dequantize-and-matmul reference.
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.gemm import configs, reference
from kernelkit.ops.library import kernel_op

OUTPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _ref(a, b, a_scales, b_scales, block_size, output_dtype):
    return reference.w8a8_block_fp8_matmul_ref(a, b, a_scales, b_scales, block_size, output_dtype)


def _triton(a, b, a_scales, b_scales, block_size, output_dtype):
    m, n, k = a.shape[0], b.shape[0], a.shape[1]
    out = torch.empty(m, n, dtype=output_dtype, device=a.device)
    config = configs.get_config(m, n, k, torch.cuda.get_device_name(a.device), block_size)
    triton_impl("kernelkit.ops.gemm.triton_impl").w8a8_block_fp8_matmul(a, b, a_scales, b_scales, block_size, out,
                                                                        config)
    return out


def _never(*args) -> None:
    return None


def _cublas_unsupported(a, b, a_scales, b_scales, block_size, output_dtype):
    from kernelkit.ops.gemm import scaled_mm

    if configs.faster_than_cublas(a.shape[0], b.shape[0], a.shape[1], torch.cuda.get_device_name(a.device),
                                  tuple(block_size)):
        return "the tuned Triton config was timed faster at this shape and batch size"
    return scaled_mm.unsupported(a, b, a_scales, block_size)


def _cublas(a, b, a_scales, b_scales, block_size, output_dtype):
    from kernelkit.ops.gemm import scaled_mm

    return scaled_mm.matmul(a, b, a_scales, b_scales, block_size, output_dtype,
                            lambda: _triton(a, b, a_scales, b_scales, block_size, output_dtype))


# cuBLAS first where its probe passed (from M = 16 it is 1.7-2x faster than our Triton kernel on an H200 at
# most shapes: benches/RESULTS.md), except where a tuned config says Triton was timed faster (thin shapes at
# M = 16-256, where cuBLAS block-wise has too few output tiles and no split K); our Triton kernel covers M = 1,
# unaligned scale columns, K not a multiple of 128 and other block sizes.
GEMM_IMPLS = (
    ("cublas", _cublas_unsupported, _cublas),
    ("triton", _never, _triton),
    ("torch", _never, _ref),
)


@kernel_op("w8a8_block_fp8_matmul")
def _matmul_op(a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor, b_scales: torch.Tensor, block_n: int,
               block_k: int, output_dtype: torch.dtype) -> torch.Tensor:
    """CPU: the reference."""
    return reference.w8a8_block_fp8_matmul_ref(a, b, a_scales, b_scales, (block_n, block_k), output_dtype)


@_matmul_op.register_kernel("cuda")
def _matmul_cuda(a, b, a_scales, b_scales, block_n, block_k, output_dtype):
    return run_first("w8a8_block_fp8_matmul", GEMM_IMPLS, a, b, a_scales, b_scales, (block_n, block_k), output_dtype)


@_matmul_op.register_fake
def _matmul_fake(a, b, a_scales, b_scales, block_n, block_k, output_dtype):
    return a.new_empty(a.shape[0], b.shape[0], dtype=output_dtype)


def _check(a, b, a_scales, b_scales, block_size, output_dtype) -> None:
    what = "w8a8_block_fp8_matmul"
    if len(block_size) != 2 or min(block_size) <= 0:
        raise ValueError(f"{what}: block_size must be [block_n, block_k], got {block_size}")
    block_n, block_k = block_size
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{what}: A must be [M, K] and B [N, K] with the same K; got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    if a.dtype != torch.float8_e4m3fn or b.dtype != torch.float8_e4m3fn:
        raise TypeError(f"{what}: A and B must be float8_e4m3fn, got {a.dtype} and {b.dtype}")
    (m, k), n = a.shape, b.shape[0]
    k_blocks, n_blocks = -(-k // block_k), -(-n // block_n)
    for name, t, shape in (("As", a_scales, (m, k_blocks)), ("Bs", b_scales, (n_blocks, k_blocks))):
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            raise ValueError(f"{what}: {name} must be float32 {shape}, got {t.dtype} {tuple(t.shape)}")
    if len({t.device for t in (a, b, a_scales, b_scales)}) != 1:
        raise ValueError(f"{what}: all operands must be on one device")
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"{what}: output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype}")


def w8a8_block_fp8_matmul(a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor, b_scales: torch.Tensor,
                          block_size: list[int] | tuple[int, int],
                          output_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Block-scaled FP8 matmul: C = (A * As) @ (B * Bs)^T, accumulated in fp32.

    sglang's contract (python/sglang/srt/layers/quantization/fp8_kernel.py); format: DeepSeek-V3 fine-grained
    FP8 (arXiv 2412.19437).

    Args:
        a: [M, K] float8_e4m3fn activations, e.g. from ``per_token_group_quant_fp8(x, block_k)``.
        b: [N, K] float8_e4m3fn weights.
        a_scales: [M, ceil(K / block_k)] float32, any strides (row- or column-major).
        b_scales: [ceil(N / block_n), ceil(K / block_k)] float32 (``weight_scale_inv``).
        block_size: [block_n, block_k] of the weight quantization, e.g. [128, 128].
        output_dtype: bfloat16, float16 or float32.

    Returns:
        [M, N] tensor of ``output_dtype``.

    Raises:
        TypeError: A or B is not float8_e4m3fn.
        ValueError: inconsistent shapes, scale shapes or dtypes, devices, block size or output dtype.
    """
    _check(a, b, a_scales, b_scales, block_size, output_dtype)
    return torch.ops.kernelkit.w8a8_block_fp8_matmul(a, b, a_scales, b_scales, int(block_size[0]),
                                                     int(block_size[1]), output_dtype)
