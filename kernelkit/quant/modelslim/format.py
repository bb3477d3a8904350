"""msModelSlim's W8A8_DYNAMIC weight format: symmetric int8 per output channel (scale = amax / 127, values in
[-127, 127], ``weight_offset`` zero), as its per-channel MinMax quantizer writes and vllm-ascend's
``AscendW8A8DynamicLinearMethod`` reads."""

from __future__ import annotations

import torch


def quantize_weight(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """weight float [N, K] -> ``weight`` int8 [N, K], ``weight_scale`` and ``weight_offset`` fp32 [N, 1].
    An all-zero row gets scale 1 (its values stay 0). Raises ValueError for a weight with NaN or Inf."""
    w = weight.float()
    if not torch.isfinite(w).all():
        raise ValueError("W8A8_DYNAMIC: the weight has NaN or Inf values")
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return {"weight": q, "weight_scale": scale, "weight_offset": torch.zeros_like(scale)}


def dequantize_weight(weight: torch.Tensor, weight_scale: torch.Tensor, weight_offset: torch.Tensor) -> torch.Tensor:
    """(weight - weight_offset) * weight_scale in fp32 [N, K]."""
    return (weight.float() - weight_offset.float()) * weight_scale.float()
