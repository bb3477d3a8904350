"""The W4A16 GEMMs as ``torch.library`` ops (fake implementations included).

- ``awq_gemm`` on AutoAWQ's GEMM layout, for callers that hold AutoAWQ tensors: CUDA runs the Triton kernel
  (``triton_impl.py``), falling back to the reference with one logged warning; CPU runs the plain-torch
  reference (``reference.py``), which defines the semantics.
- ``w4a16_gemm`` on kernelkit's tensor-core layout (``mma_layout.py``), which the AWQ linear methods repack
  into: CUDA C++ (``cuda_impl.py``), or the reference (``mma_layout.w4a16_mma_gemm_ref``).
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.library import kernel_op
from kernelkit.ops.w4a16 import mma_layout, reference


@kernel_op("awq_gemm")
def _awq_gemm_op(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 group_size: int) -> torch.Tensor:
    return reference.awq_gemm_ref(x, qweight, qzeros, scales, group_size)


def _never(*args) -> None:
    return None


def _triton_unsupported(x, qweight, qzeros, scales, group_size):
    return "group size below 16 (the dot's minimum K)" if group_size < 16 else None


def _triton(x, qweight, qzeros, scales, group_size):
    return triton_impl("kernelkit.ops.w4a16.triton_impl").awq_gemm(x, qweight, qzeros, scales, group_size)


AWQ_GEMM_IMPLS = (("triton", _triton_unsupported, _triton), ("torch", _never, reference.awq_gemm_ref))


@_awq_gemm_op.register_kernel("cuda")
def _awq_gemm_cuda(x, qweight, qzeros, scales, group_size):
    return run_first("awq_gemm", AWQ_GEMM_IMPLS, x, qweight, qzeros, scales, group_size)


@_awq_gemm_op.register_fake
def _awq_gemm_fake(x, qweight, qzeros, scales, group_size):
    return x.new_empty(x.shape[0], scales.shape[1])


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             group_size: int) -> torch.Tensor:
    """y = x @ W for AWQ 4-bit weights in AutoAWQ's GEMM layout (see ``reference.py``).

    Args:
        x: [M, K] fp16, bf16 or fp32 activations.
        qweight: int32 [K, N/8]; qzeros: int32 [K/G, N/8]; scales: [K/G, N].
        group_size: G, which divides K.

    Returns:
        [M, N] in x's dtype.

    Raises:
        ValueError: shapes or dtypes that do not fit one another.
    """
    k, n8 = qweight.shape
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"awq_gemm: x must be [M, {k}], got {tuple(x.shape)}")
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError(f"awq_gemm: qweight and qzeros must be int32, got {qweight.dtype} and {qzeros.dtype}")
    if k % group_size or tuple(qzeros.shape) != (k // group_size, n8) or tuple(scales.shape) != (k // group_size,
                                                                                                 8 * n8):
        raise ValueError(f"awq_gemm: with K={k}, N={8 * n8}, group {group_size}: qzeros must be "
                         f"{[k // group_size, n8]} and scales {[k // group_size, 8 * n8]}, got "
                         f"{list(qzeros.shape)} and {list(scales.shape)}")
    return torch.ops.kernelkit.awq_gemm(x, qweight, qzeros, scales, int(group_size))


# ``w4a16_gemm``: the same product on kernelkit's tensor-core layout (``mma_layout.py``), which the AWQ linear
# methods repack into after loading. Tokens up to GEMV_MAX_M run the CUDA tensor-core kernel, which streams the
# 4-bit weight once per 8 or 16 tokens; more tokens dequantize once to 16 bits and call cuBLAS (measured in
# benches/RESULTS.md, "W4A16 on the tensor-core layout").
GEMV_MAX_M = 64


def _group_size(qweight, scales) -> int:
    return 64 * qweight.shape[1] // max(1, scales.shape[1])


def _cuda_unsupported(x, qweight, zeros, scales, n):
    from kernelkit.ops.w4a16 import cuda_impl

    return cuda_impl.unsupported(x, scales, _group_size(qweight, scales))


def _cuda_gemm(x, qweight, zeros, scales, n):
    from kernelkit.ops.w4a16 import cuda_impl

    if x.shape[0] <= GEMV_MAX_M:
        return cuda_impl.gemm(x, qweight, zeros, scales, n, _group_size(qweight, scales))
    return x @ cuda_impl.dequantize(qweight, zeros, scales, n).t()


W4A16_GEMM_IMPLS = (("cuda", _cuda_unsupported, _cuda_gemm), ("torch", _never, mma_layout.w4a16_mma_gemm_ref))


@kernel_op("w4a16_gemm")
def _w4a16_gemm_op(x: torch.Tensor, qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
                   n: int) -> torch.Tensor:
    return mma_layout.w4a16_mma_gemm_ref(x, qweight, zeros, scales, n)


@_w4a16_gemm_op.register_kernel("cuda")
def _w4a16_gemm_cuda(x, qweight, zeros, scales, n):
    return run_first("w4a16_gemm", W4A16_GEMM_IMPLS, x, qweight, zeros, scales, n)


@_w4a16_gemm_op.register_fake
def _w4a16_gemm_fake(x, qweight, zeros, scales, n):
    return x.new_empty(x.shape[0], n)


def w4a16_gemm(x: torch.Tensor, qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
               n: int) -> torch.Tensor:
    """y = x @ W^T for 4-bit weights in kernelkit's tensor-core layout (``mma_layout.repack_mma``).

    Args:
        x: [M, K] bf16 or fp16 (fp32 on the reference path) activations, any strides.
        qweight: int32 [ceil(N/16), K/64, 32, 4]; zeros: uint8 and scales: x's dtype, [ceil(N/16), K/G, 16].
        n: N, the output features (the layout pads N to a multiple of 16).

    Returns:
        [M, N] in x's dtype; fp32 accumulation (the tensor cores' on CUDA; at M > GEMV_MAX_M the weight is
        first rounded to x's dtype for cuBLAS, as vLLM's AWQ path does at large M).

    Raises:
        ValueError: shapes or dtypes that do not fit one another.
    """
    if x.dim() != 2 or qweight.dim() != 4 or x.shape[1] != 64 * qweight.shape[1]:
        raise ValueError(f"w4a16_gemm: x must be [M, {64 * qweight.shape[1]}] for qweight "
                         f"{list(qweight.shape)}, got {list(x.shape)}")
    tiles = (n + 15) // 16
    if (qweight.dtype != torch.int32 or tuple(qweight.shape[0:1]) != (tiles,) or zeros.dtype != torch.uint8
            or zeros.shape != scales.shape or zeros.dim() != 3 or zeros.shape[0] != tiles or zeros.shape[2] != 16):
        raise ValueError(f"w4a16_gemm: for N = {n}: qweight int32 [{tiles}, K/64, 32, 4], zeros uint8 and scales "
                         f"[{tiles}, K/G, 16]; got {qweight.dtype} {list(qweight.shape)}, {zeros.dtype} "
                         f"{list(zeros.shape)}, {scales.dtype} {list(scales.shape)}")
    return torch.ops.kernelkit.w4a16_gemm(x, qweight, zeros, scales, int(n))
