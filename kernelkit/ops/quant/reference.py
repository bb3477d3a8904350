"""Plain-torch references for the 8-bit activation quantizers. They define the exact semantics every
kernel must reproduce:

- amax is taken in fp32 and clamped below by ``eps``; a NaN anywhere in a group makes amax NaN.
- scale = amax / qmax, with qmax 448 (float8_e4m3fn) or 127 (int8), as an IEEE fp32 division.
- with ``ue8m0``, the scale is rounded up to the next power of two (exact, via frexp).
- q = x * (1 / scale) (an IEEE fp32 reciprocal once per scale, then IEEE products), clamped to
  [-qmax, qmax] (NaN stays NaN), then cast: to float8_e4m3fn by round-to-nearest-even; to int8 by
  round-half-to-even with NaN -> 0. Multiplying by the reciprocal (as vLLM's CUDA quantizers do) rather than
  dividing costs at most one fp32 ulp before the 8-bit rounding and keeps the kernels memory-bound; with
  UE8M0 scales the reciprocal is exact, so the two agree.

The CPU evaluation of these functions is the definition the kernels are tested against, bit for bit. On CUDA
tensors torch's own kernels may differ from it in the last bit of a few values (see benches/RESULTS.md).

Sources: DeepSeek-V3 fine-grained FP8 (arXiv 2412.19437, section 3.3), sglang
``python/sglang/srt/layers/quantization/fp8_kernel.py`` (``per_token_group_quant_8bit``,
``per_token_quant_int8``) and vLLM ``vllm/_custom_ops.py`` (``scaled_fp8_quant``).
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0
INT8_MAX = 127.0


def qmax(dtype: torch.dtype) -> float:
    """Largest magnitude of the quantized type. Raises ValueError for unsupported dtypes."""
    if dtype == torch.float8_e4m3fn:
        return FP8_MAX
    if dtype == torch.int8:
        return INT8_MAX
    raise ValueError(f"8-bit quantization supports float8_e4m3fn and int8 outputs, not {dtype}")


def round_up_pow2(scale: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= scale, elementwise, for positive scales (UE8M0). NaN/Inf pass through."""
    mantissa, exponent = torch.frexp(scale)
    pow2 = torch.ldexp(torch.ones_like(scale), exponent)
    exact = (mantissa == 0.5) | ~torch.isfinite(scale)
    return torch.where(exact, scale, pow2)


def cast_8bit(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamp fp32 values to the type's range and cast them (RNE; int8 NaN -> 0)."""
    m = qmax(dtype)
    y = y.clamp(-m, m)
    if dtype == torch.int8:
        return torch.nan_to_num(y.round(), nan=0.0).to(torch.int8)
    return y.to(dtype)


def per_token_group_quant_8bit_ref(
    x: torch.Tensor, group_size: int, dst_dtype: torch.dtype, eps: float = 1e-10, scale_ue8m0: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference per-token-group quantization.

    Args:
        x: [..., H] bf16/fp16/fp32, H divisible by ``group_size``.
        group_size: columns per scale.
        dst_dtype: torch.float8_e4m3fn or torch.int8.
        eps: lower clamp of each group's amax.
        scale_ue8m0: round scales up to powers of two.

    Returns:
        q: [..., H] ``dst_dtype``; scales: [..., H / group_size] fp32, row-major.
        q = cast(x * (1 / scale)).
    """
    *lead, h = x.shape
    xg = x.float().reshape(*lead, h // group_size, group_size)
    amax = xg.abs().amax(dim=-1, keepdim=True).clamp(min=eps)
    scale = amax / qmax(dst_dtype)
    if scale_ue8m0:
        scale = round_up_pow2(scale)
    q = cast_8bit(xg * (1.0 / scale), dst_dtype)
    return q.reshape(x.shape), scale.squeeze(-1)


def per_token_quant_int8_ref(x: torch.Tensor, eps: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference per-token (per-row) symmetric int8 quantization.

    Args:
        x: [..., H] bf16/fp16/fp32.
    Returns:
        q: [..., H] int8; scales: [..., 1] fp32.
    """
    return per_token_group_quant_8bit_ref(x, x.shape[-1], torch.int8, eps)


def per_tensor_quant_fp8_ref(
    x: torch.Tensor, scale: torch.Tensor | None = None, eps: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference per-tensor FP8 quantization: dynamic (scale = max(amax, eps) / 448) or static.

    Args:
        x: any shape, bf16/fp16/fp32.
        scale: optional fp32 tensor of one element (static quantization).
    Returns:
        q: float8_e4m3fn, x's shape; scale: fp32 [1].
    """
    xf = x.float()
    if scale is None:
        amax = xf.abs().amax() if xf.numel() else torch.zeros((), device=x.device)
        scale = (amax.clamp(min=eps) / FP8_MAX).reshape(1)
    scale = scale.reshape(1).float()
    return cast_8bit(xf * (1.0 / scale), torch.float8_e4m3fn), scale
