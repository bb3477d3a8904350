"""The fused layer ops as ``torch.library`` custom ops: Triton on CUDA (torch reference if Triton cannot run,
with one logged warning), the torch reference on CPU."""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.layers import reference
from kernelkit.ops.library import kernel_op


def _triton():
    return triton_impl("kernelkit.ops.layers.triton_impl")


def _never(*args) -> None:
    return None


@kernel_op("rms_norm")
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    out, res = reference.rms_norm_ref(x, weight, eps, residual)
    return out, (res if res is not None else x.new_empty(0))


@_rms_norm_op.register_kernel("cuda")
def _rms_norm_cuda(x, weight, eps, residual):
    out = torch.empty_like(x)
    res_out = torch.empty_like(x) if residual is not None else x.new_empty(0)

    def ref(*_):
        o, r = reference.rms_norm_ref(x, weight, eps, residual)
        out.copy_(o)
        if r is not None:
            res_out.copy_(r)

    impls = (("triton", _never, lambda *_: _triton().rms_norm(x, weight, eps, residual, out,
                                                             res_out if residual is not None else None)),
             ("torch", _never, ref))
    run_first("rms_norm", impls)
    return out, res_out


@_rms_norm_op.register_fake
def _rms_norm_fake(x, weight, eps, residual):
    return torch.empty_like(x), (torch.empty_like(x) if residual is not None else x.new_empty(0))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RMSNorm, optionally fused with the residual add before it (semantics: ``reference.rms_norm_ref``).

    Args:
        x: [T, n] bf16/fp16/fp32, contiguous.
        weight: [n], x's dtype.
        eps: added to the mean square.
        residual: optional [T, n] added to x first.

    Returns:
        (normed [T, n], x + residual or None).

    Raises:
        ValueError: shapes or dtypes disagree.
    """
    if x.dim() != 2 or weight.shape != x.shape[-1:] or (residual is not None and residual.shape != x.shape):
        raise ValueError(f"rms_norm: x must be [T, n], weight [n] and residual [T, n]; got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}, {None if residual is None else tuple(residual.shape)}")
    out, res = torch.ops.kernelkit.rms_norm(x.contiguous(), weight, eps,
                                            None if residual is None else residual.contiguous())
    return out, (res if residual is not None else None)


@kernel_op("silu_and_mul")
def _silu_and_mul_op(x: torch.Tensor) -> torch.Tensor:
    return reference.silu_and_mul_ref(x)


@_silu_and_mul_op.register_kernel("cuda")
def _silu_and_mul_cuda(x):
    out = x.new_empty(*x.shape[:-1], x.shape[-1] // 2)
    run_first("silu_and_mul", (("triton", _never, lambda: _triton().silu_and_mul(x, out)),
                               ("torch", _never, lambda: out.copy_(reference.silu_and_mul_ref(x)))))
    return out


@_silu_and_mul_op.register_fake
def _silu_and_mul_fake(x):
    return x.new_empty(*x.shape[:-1], x.shape[-1] // 2)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for x = [gate | up] of shape [T, 2d] (contiguous) -> [T, d]; the SwiGLU activation
    (Shazeer 2020). Raises ValueError for an odd last dimension or a non-2-D x."""
    if x.dim() != 2 or x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul: x must be [T, 2d], got {tuple(x.shape)}")
    return torch.ops.kernelkit.silu_and_mul(x.contiguous())


@kernel_op("rotary")
def _rotary_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return reference.rotary_ref(x, cos, sin)


@_rotary_op.register_kernel("cuda")
def _rotary_cuda(x, cos, sin):
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    run_first("rotary", (("triton", _never, lambda: _triton().rotary(x, cos, sin, out)),
                         ("torch", _never, lambda: out.copy_(reference.rotary_ref(x, cos, sin)))))
    return out


@_rotary_op.register_fake
def _rotary_fake(x, cos, sin):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding in the rotate-half layout (RoFormer; HF Llama).

    Args:
        x: [T, heads, D] with a unit last stride (a view of a fused projection is fine).
        cos, sin: [T, D] in x's dtype.

    Returns:
        [T, heads, D] contiguous.

    Raises:
        ValueError: shapes disagree or D is odd.
    """
    if x.dim() != 3 or x.shape[-1] % 2 or cos.shape != (x.shape[0], x.shape[-1]) or sin.shape != cos.shape:
        raise ValueError(f"rotary: x must be [T, heads, D] with even D and cos/sin [T, D]; got {tuple(x.shape)}, "
                         f"{tuple(cos.shape)}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    return torch.ops.kernelkit.rotary(x, cos.contiguous(), sin.contiguous())
