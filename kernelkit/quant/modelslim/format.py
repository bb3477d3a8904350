"""msModelSlim's W8A8_DYNAMIC weight format: symmetric int8 per output channel (scale = amax / 127, values in
[-127, 127], ``weight_offset`` zero), as its per-channel MinMax quantizer writes and vllm-ascend's
``AscendW8A8DynamicLinearMethod`` reads."""

from __future__ import annotations

import torch


def quantize_weight(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """weight float [N, K] -> ``weight`` int8 [N, K], ``weight_scale`` and ``weight_offset`` fp32 [N, 1].
    An all-zero row gets scale 1 (its values stay 0). Raises ValueError for a weight with NaN or Inf."""
    w = weight.float()
    if w.device.type != "meta" and not torch.isfinite(w).all():  # convert plans on meta tensors
        raise ValueError("W8A8_DYNAMIC: the weight has NaN or Inf values")
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return {"weight": q, "weight_scale": scale, "weight_offset": torch.zeros_like(scale)}


def dequantize_weight(weight: torch.Tensor, weight_scale: torch.Tensor, weight_offset: torch.Tensor) -> torch.Tensor:
    """(weight - weight_offset) * weight_scale in fp32 [N, K]."""
    return (weight.float() - weight_offset.float()) * weight_scale.float()


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int4 values (int8 [..., N, K] in [-8, 7]) -> int8 [..., ceil(N/2), K], two output rows per byte: row 2j
    in the low nibble, row 2j + 1 in the high one (msModelSlim's W4A8_DYNAMIC packing along the output
    dimension); an odd last row is paired with zeros."""
    if q.shape[-2] % 2:
        q = torch.cat([q, q.new_zeros(*q.shape[:-2], 1, q.shape[-1])], dim=-2)
    low, high = q[..., 0::2, :].to(torch.int16), q[..., 1::2, :].to(torch.int16)
    return ((low & 0xF) | ((high & 0xF) << 4)).to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: int8 [..., N/2, K] -> int8 [..., N, K] (``rows``: N, for odd N)."""
    p = packed.to(torch.int16)
    low, high = (p << 12) >> 12, (p << 8) >> 12
    out = torch.stack([low, high], dim=-2).reshape(*packed.shape[:-2], 2 * packed.shape[-2], packed.shape[-1])
    return out[..., : rows if rows is not None else out.shape[-2], :].to(torch.int8)


def dequantize(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """One linear layer's float weight [N, K] (fp32) from its checkpoint tensors by suffix (``weight``,
    ``weight_scale``, ``weight_offset``)."""
    return dequantize_weight(tensors["weight"], tensors["weight_scale"], tensors["weight_offset"])
