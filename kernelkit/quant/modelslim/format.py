"""msModelSlim's weight formats, as its AscendV1 saver (``modelslim_v1/save/ascendv1.py``) writes them and
vllm-ascend and sglang read them.

- W8A8_DYNAMIC: symmetric int8 per output channel (scale = amax / 127, values in [-127, 127]): ``weight`` int8
  [N, K], ``weight_scale`` and a zero ``weight_offset`` fp32 [N, 1].
- W4A8_DYNAMIC, per channel (``version`` 1.0.0): symmetric int4 per output channel (scale = amax / 7, values
  clamped to [-8, 7]), two output rows per byte (``pack_int4``): ``weight`` int8 [N/2, K]; ``weight_scale`` and a
  zero ``weight_offset`` fp32 [N, 1]; ``scale_bias`` fp32 = 8 * sum_k q[n, k] * scale[n] (a correction term of
  Ascend's int4 kernels), [N, 1] for column layers and [N, 16] for row layers (o_proj, down_proj: one partial
  sum per sixteenth of K, so that a tensor-parallel rank sums its own slice). Checkpoints of other versions
  keep one int4 value per byte ([N, K]) and no scale_bias. The weight is q * weight_scale either way.
"""

from __future__ import annotations

import torch

from kernelkit.ops.int4_pack import pack_int4, unpack_int4


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


ROW_PARALLEL = ("o_proj", "down_proj", "w2")  # msModelSlim's names of the layers whose scale_bias is [N, 16]
SCALE_BIAS_CHUNKS = 16


def quantize_weight_w4a8(weight: torch.Tensor, row_parallel: bool) -> dict[str, torch.Tensor]:
    """weight float [N, K] (N even) -> W4A8_DYNAMIC's ``weight`` int8 [N/2, K] (packed), ``weight_scale``,
    ``weight_offset`` fp32 [N, 1] and ``scale_bias`` fp32 [N, 1] or, for a row-parallel layer, [N, 16].
    Raises ValueError for NaN/Inf, an odd N, or a row-parallel K that 16 does not divide."""
    w = weight.float()
    n, k = w.shape
    if w.device.type != "meta" and not torch.isfinite(w).all():
        raise ValueError("W4A8_DYNAMIC: the weight has NaN or Inf values")
    if n % 2 or (row_parallel and k % SCALE_BIAS_CHUNKS):
        raise ValueError(f"W4A8_DYNAMIC: a weight of shape [{n}, {k}] cannot be stored (N must be even to pack two "
                         f"rows per byte{', K a multiple of 16 for a row layer' if row_parallel else ''})")
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    q = torch.round(w / scale).clamp(-8, 7).to(torch.int8)
    chunks = SCALE_BIAS_CHUNKS if row_parallel else 1
    scale_bias = 8 * (q.float() * scale).reshape(n, chunks, k // chunks).sum(-1)
    return {"weight": pack_int4(q), "weight_scale": scale, "weight_offset": torch.zeros_like(scale),
            "scale_bias": scale_bias}


def dequantize(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """One linear layer's float weight [N, K] (fp32) from its checkpoint tensors by suffix (``weight``,
    ``weight_scale``, ``weight_offset``): W8A8_DYNAMIC, or W4A8_DYNAMIC packed [N/2, K] or unpacked."""
    weight, rows = tensors["weight"], tensors["weight_scale"].shape[0]
    if weight.shape[0] != rows:
        weight = unpack_int4(weight, rows)
    return dequantize_weight(weight, tensors["weight_scale"], tensors["weight_offset"])
