"""RMSNorm and SiLU-and-mul fused with per-token-group FP8 quantization of their output, for layers whose next
GEMM is block-FP8 (``w8a8_block_fp8_matmul``): one launch instead of two, and the bf16 activation never goes
to memory. Triton on CUDA (torch reference if Triton cannot run), the reference on CPU.

Scales come back column-major ([T, G] view of a [G, T] buffer), the layout ``Fp8BlockLinear`` passes to the GEMM.
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.layers import reference
from kernelkit.ops.library import kernel_op
from kernelkit.ops.quant.layouts import GROUP_SIZES


def _triton():
    return triton_impl("kernelkit.ops.layers.triton_impl")


def _never(*args) -> None:
    return None


@kernel_op("rms_norm_quant_fp8")
def _rms_norm_quant_op(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None,
                       group_size: int, quant_eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU: the reference. Returns (q, scales as a [G, T] buffer, x + residual or an empty tensor)."""
    q, s, res = reference.rms_norm_quant_fp8_ref(x, weight, eps, residual, group_size, quant_eps)
    return q, s.t().contiguous(), (res if res is not None else x.new_empty(0))


@_rms_norm_quant_op.register_kernel("cuda")
def _rms_norm_quant_cuda(x, weight, eps, residual, group_size, quant_eps):
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    s_t = torch.empty(x.shape[1] // group_size, x.shape[0], dtype=torch.float32, device=x.device)
    res_out = torch.empty_like(x) if residual is not None else x.new_empty(0)

    def ref():
        rq, rs, rres = reference.rms_norm_quant_fp8_ref(x, weight, eps, residual, group_size, quant_eps)
        q.copy_(rq)
        s_t.copy_(rs.t())
        if residual is not None:
            res_out.copy_(rres)

    run_first("rms_norm_quant_fp8", (
        ("triton", _never, lambda: _triton().rms_norm_quant_fp8(x, weight, eps, residual, group_size, quant_eps, q,
                                                                s_t.t(), res_out if residual is not None else None)),
        ("torch", _never, ref)))
    return q, s_t, res_out


@_rms_norm_quant_op.register_fake
def _rms_norm_quant_fake(x, weight, eps, residual, group_size, quant_eps):
    return (torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device),
            x.new_empty(x.shape[1] // group_size, x.shape[0], dtype=torch.float32),
            torch.empty_like(x) if residual is not None else x.new_empty(0))


@kernel_op("silu_and_mul_quant_fp8")
def _silu_and_mul_quant_op(x: torch.Tensor, group_size: int, quant_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU: the reference. Returns (q, scales as a [G, T] buffer)."""
    q, s = reference.silu_and_mul_quant_fp8_ref(x, group_size, quant_eps)
    return q, s.t().contiguous()


@_silu_and_mul_quant_op.register_kernel("cuda")
def _silu_and_mul_quant_cuda(x, group_size, quant_eps):
    d = x.shape[-1] // 2
    q = torch.empty(x.shape[0], d, dtype=torch.float8_e4m3fn, device=x.device)
    s_t = torch.empty(d // group_size, x.shape[0], dtype=torch.float32, device=x.device)

    def ref():
        rq, rs = reference.silu_and_mul_quant_fp8_ref(x, group_size, quant_eps)
        q.copy_(rq)
        s_t.copy_(rs.t())

    run_first("silu_and_mul_quant_fp8", (
        ("triton", _never, lambda: _triton().silu_and_mul_quant_fp8(x, group_size, quant_eps, q, s_t.t())),
        ("torch", _never, ref)))
    return q, s_t


@_silu_and_mul_quant_op.register_fake
def _silu_and_mul_quant_fake(x, group_size, quant_eps):
    d = x.shape[-1] // 2
    return (torch.empty(x.shape[0], d, dtype=torch.float8_e4m3fn, device=x.device),
            x.new_empty(d // group_size, x.shape[0], dtype=torch.float32))


def _check_group(n: int, group_size: int, quant_eps: float, what: str) -> None:
    if group_size not in GROUP_SIZES or n % group_size:
        raise ValueError(f"{what}: group_size must be one of {GROUP_SIZES} and divide {n}, got {group_size}")
    if not quant_eps > 0:
        raise ValueError(f"{what}: quant_eps must be positive, got {quant_eps}")


def rms_norm_quant_fp8(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
                       group_size: int = 128, quant_eps: float = 1e-10
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RMSNorm (optionally after the residual add), then per-token-group FP8 quantization of its output.

    Equals ``per_token_group_quant_fp8(rms_norm(x, weight, eps, residual)[0], group_size, quant_eps,
    column_major_scales=True)`` bit for bit (semantics: ``reference.rms_norm_quant_fp8_ref``); vLLM fuses the
    same pair. Formats: DeepSeek-V3 fine-grained FP8 activations (arXiv 2412.19437).

    Args:
        x: [T, n] bf16/fp16/fp32, contiguous; n a multiple of ``group_size``.
        weight: [n], x's dtype. eps: added to the mean square.
        residual: optional [T, n] added to x first.
        group_size: columns per scale (16, 32, 64, 128 or 256). quant_eps: lower clamp of each group's amax.

    Returns:
        (q [T, n] float8_e4m3fn, scales [T, n / group_size] fp32 column-major, x + residual or None).

    Raises:
        ValueError: shapes or dtypes disagree, or a bad group_size or quant_eps.
    """
    what = "rms_norm_quant_fp8"
    if x.dim() != 2 or weight.shape != x.shape[-1:] or (residual is not None and residual.shape != x.shape):
        raise ValueError(f"{what}: x must be [T, n], weight [n] and residual [T, n]; got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}, {None if residual is None else tuple(residual.shape)}")
    _check_group(x.shape[1], group_size, quant_eps, what)
    q, s_t, res = torch.ops.kernelkit.rms_norm_quant_fp8(
        x.contiguous(), weight, eps, None if residual is None else residual.contiguous(), group_size, quant_eps)
    return q, s_t.t(), (res if residual is not None else None)


def silu_and_mul_quant_fp8(x: torch.Tensor, group_size: int = 128, quant_eps: float = 1e-10
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """silu(gate) * up for x = [gate | up], then per-token-group FP8 quantization of the product.

    Equals ``per_token_group_quant_fp8(silu_and_mul(x), group_size, quant_eps, column_major_scales=True)``
    bit for bit (semantics: ``reference.silu_and_mul_quant_fp8_ref``; vLLM's
    ``silu_and_mul_per_token_group_quant`` fuses the same pair).

    Args:
        x: [T, 2d] bf16/fp16/fp32, contiguous; d a multiple of ``group_size``.
        group_size: columns per scale (16, 32, 64, 128 or 256). quant_eps: lower clamp of each group's amax.

    Returns:
        (q [T, d] float8_e4m3fn, scales [T, d / group_size] fp32 column-major).

    Raises:
        ValueError: x is not 2-D with an even last dimension, or a bad group_size or quant_eps.
    """
    what = "silu_and_mul_quant_fp8"
    if x.dim() != 2 or x.shape[-1] % 2:
        raise ValueError(f"{what}: x must be [T, 2d], got {tuple(x.shape)}")
    _check_group(x.shape[1] // 2, group_size, quant_eps, what)
    q, s_t = torch.ops.kernelkit.silu_and_mul_quant_fp8(x.contiguous(), group_size, quant_eps)
    return q, s_t.t()
