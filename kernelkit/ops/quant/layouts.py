"""Argument checks and scale-tensor layouts for the 8-bit quantizers.

Scale layouts, for x [M, H] and G = H / group_size groups a row:
- row-major: [M, G], strides (G, 1).
- column-major (DeepGEMM): a [G, M] buffer viewed as [M, G], strides (1, M).
- column-major, TMA-aligned: M padded to a multiple of 4 (16 bytes of fp32), strides (1, ceil(M/4)*4).
"""

from __future__ import annotations

import math

import torch

INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
GROUP_SIZES = (16, 32, 64, 128, 256)
TMA_ALIGN = 4  # fp32 elements in 16 bytes
MIN_EPS = 1e-30  # keeps scales normal fp32 numbers, where power-of-two rounding is exact in every kernel


def check_input(x: torch.Tensor, what: str) -> None:
    """Raises TypeError/ValueError unless x is a float tensor with a non-empty last dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"{what}: x must be bfloat16, float16 or float32, got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{what}: x must have a non-empty last dimension, got shape {tuple(x.shape)}")


def check_eps(eps: float, what: str) -> None:
    """Raises ValueError unless eps is finite and at least MIN_EPS."""
    if not (math.isfinite(eps) and eps >= MIN_EPS):
        raise ValueError(f"{what}: eps must be finite and >= {MIN_EPS}, got {eps}")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x viewed as [M, H] with a unit last stride (copied only if needed).

    Pointer alignment is a run-time property (not visible under torch.compile tracing): the kernels that
    need 16-byte aligned rows check it themselves and decline otherwise.
    """
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def check_out_q(out_q: torch.Tensor, x: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Raises ValueError unless out_q is a contiguous ``dtype`` tensor of x's shape on x's device."""
    if out_q.shape != x.shape or out_q.dtype != dtype or out_q.device != x.device or not out_q.is_contiguous():
        raise ValueError(
            f"{what}: out_q must be a contiguous {dtype} tensor of shape {tuple(x.shape)} on {x.device}; "
            f"got {out_q.dtype} {tuple(out_q.shape)} on {out_q.device} (contiguous={out_q.is_contiguous()})"
        )


def alloc_scales(lead: tuple[int, ...], m: int, groups: int, column_major: bool, tma_aligned: bool,
                 device: torch.device) -> torch.Tensor:
    """A new scale tensor in the requested layout: [*lead, G] row-major, or [M, G] column-major."""
    if not column_major:
        return torch.empty(*lead, groups, dtype=torch.float32, device=device)
    m_pad = -(-m // TMA_ALIGN) * TMA_ALIGN if tma_aligned else m
    return torch.empty(groups, m_pad, dtype=torch.float32, device=device)[:, :m].t()


def scales_2d(out_s: torch.Tensor, lead: tuple[int, ...], m: int, groups: int, column_major: bool,
              tma_aligned: bool, device: torch.device, what: str) -> torch.Tensor:
    """Check a caller's scale buffer and return it as an [M, G] view. Raises ValueError if it does not fit."""
    expected = (m, groups) if column_major else (*lead, groups)
    if out_s.dtype != torch.float32 or out_s.device != device or tuple(out_s.shape) != expected:
        raise ValueError(f"{what}: out_s must be float32 of shape {expected} on {device}; "
                         f"got {out_s.dtype} {tuple(out_s.shape)} on {out_s.device}")
    try:
        s2 = out_s.view(m, groups)
    except RuntimeError:
        raise ValueError(f"{what}: out_s with strides {out_s.stride()} cannot be viewed as [{m}, {groups}]") from None
    sm, sg = s2.stride()
    if column_major:
        fits = (sm == 1 or m <= 1) and (sg >= m or groups <= 1) and (not tma_aligned or sg % TMA_ALIGN == 0)
        layout = f"column-major{' TMA-aligned (stride(1) a multiple of 4)' if tma_aligned else ''}"
    else:
        fits = (sg == 1 or groups <= 1) and (sm >= groups or m <= 1)
        layout = "row-major"
    if not fits:
        raise ValueError(f"{what}: out_s strides {out_s.stride()} do not fit {layout} scales of shape {expected}")
    return s2
