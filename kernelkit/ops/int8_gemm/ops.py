"""``int8_scaled_mm`` as a ``torch.library`` op (fake implementation included): the dense W8A8 int8 linear's
GEMM. CUDA runs the Triton kernel (``triton_impl.py``: scales, bias and cast in its epilogue, one launch; 1.4-3x
faster than ``torch._int_mm`` at every M measured, ``benches/bench_int8_gemm.py`` in RESULTS.md); if Triton
cannot run, ``torch._int_mm`` (cuBLAS int8 tensor cores, int32 accumulation) with the scales applied after, where
its shape rules allow (K and N multiples of 8; M is padded to 17 rows when smaller, since it needs M > 16); else,
and on the CPU, the reference (``reference.py``)."""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.int8_gemm import reference
from kernelkit.ops.library import kernel_op

INT_MM_MIN_M = 17  # torch._int_mm on CUDA needs more than 16 rows


def _never(*args) -> None:
    return None


def _triton(a, b, scale_a, scale_b, out_dtype, bias):
    return triton_impl("kernelkit.ops.int8_gemm.triton_impl").int8_scaled_mm(a, b, scale_a, scale_b, out_dtype, bias)


def _int_mm_unsupported(a, b, scale_a, scale_b, out_dtype, bias):
    return "K and N must be multiples of 8" if a.shape[1] % 8 or b.shape[0] % 8 else None


def int_mm_scaled(a, b, scale_a, scale_b, out_dtype, bias):
    """The CUDA path (also runs on CPU tensors, where torch has the same op): int32 ``_int_mm``, then scales."""
    m = a.shape[0]
    if m < INT_MM_MIN_M:
        a = torch.nn.functional.pad(a, (0, 0, 0, INT_MM_MIN_M - m))
    return reference.scale_output(torch._int_mm(a, b.t())[:m], scale_a, scale_b, out_dtype, bias)


INT8_MM_IMPLS = (("triton", _never, _triton), ("int_mm", _int_mm_unsupported, int_mm_scaled),
                 ("torch", _never, reference.int8_scaled_mm_ref))


@kernel_op("int8_scaled_mm")
def _op(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, out_dtype: torch.dtype,
        bias: torch.Tensor | None) -> torch.Tensor:
    return reference.int8_scaled_mm_ref(a, b, scale_a, scale_b, out_dtype, bias)


@_op.register_kernel("cuda")
def _cuda(a, b, scale_a, scale_b, out_dtype, bias):
    return run_first("int8_scaled_mm", INT8_MM_IMPLS, a, b, scale_a, scale_b, out_dtype, bias)


@_op.register_fake
def _fake(a, b, scale_a, scale_b, out_dtype, bias):
    return a.new_empty(a.shape[0], b.shape[0], dtype=out_dtype)


def int8_scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                   out_dtype: torch.dtype, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = (a @ b^T) * scale_a * scale_b^T (+ bias), the int products summed exactly.

    Args:
        a: int8 [M, K] activations (``per_token_quant_int8``'s q); b: int8 [N, K] weights, contiguous.
        scale_a: fp32 [M, 1] per-token scales; scale_b: fp32 [N, 1] (or [N]) per-channel scales.
        out_dtype: bf16, fp16 or fp32; bias: optional [N].

    Raises:
        ValueError: dtypes or shapes that do not fit one another.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"int8_scaled_mm: a and b must be int8 [M, K] and [N, K], got {a.dtype} "
                         f"{tuple(a.shape)} and {b.dtype} {tuple(b.shape)}")
    if scale_a.numel() != a.shape[0] or scale_b.numel() != b.shape[0]:
        raise ValueError(f"int8_scaled_mm: scale_a must have {a.shape[0]} values and scale_b {b.shape[0]}, got "
                         f"{tuple(scale_a.shape)} and {tuple(scale_b.shape)}")
    if bias is not None and bias.numel() != b.shape[0]:
        raise ValueError(f"int8_scaled_mm: bias must have {b.shape[0]} values, got {tuple(bias.shape)}")
    return torch.ops.kernelkit.int8_scaled_mm(a.contiguous(), b.contiguous(), scale_a.reshape(-1, 1).float(),
                                              scale_b.reshape(-1, 1).float(), out_dtype, bias)
