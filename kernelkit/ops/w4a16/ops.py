"""``awq_gemm``: the W4A16 GEMM as a ``torch.library`` op (fake implementation included).

CUDA: the Triton kernel (``triton_impl.py``), falling back to the reference with one logged warning; CPU: the
plain-torch reference (``reference.py``), which defines the semantics.
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.library import kernel_op
from kernelkit.ops.w4a16 import reference


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
