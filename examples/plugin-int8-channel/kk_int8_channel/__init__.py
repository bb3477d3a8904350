"""Per-output-channel int8 weight-only quantization, as a kernelkit plugin.

Checkpoint tensors per linear layer: ``weight`` int8 [N, K] and ``weight_scale`` float32 [N, 1], where
scale[n] = max(max|w[n, :]|, 1e-10) / 127 and weight = round(w / scale) (half to even). The runtime layer
dequantizes on the fly: y = x @ (weight * weight_scale).T + bias.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelkit.quant import QuantScheme


class Int8ChannelLinear(nn.Module):
    """Linear layer with per-channel int8 weights; parameters named as in the checkpoint."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.int8, device=device),
                                   requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(out_features, 1, dtype=torch.float32, device=device),
                                         requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight.float() * self.weight_scale).to(x.dtype)
        return nn.functional.linear(x, w, self.bias)


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (int8 [N, K], float32 scales [N, 1])."""
    scale = w.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-10) / 127
    return torch.round(w.float() / scale).clamp(-127, 127).to(torch.int8), scale


class Int8ChannelScheme(QuantScheme):
    """``int8-channel``: per-output-channel int8 weights, float activations."""

    name = "int8-channel"
    quant_method = "kk-int8-channel"

    @classmethod
    def from_config(cls, quantization_config: dict) -> Int8ChannelScheme:
        if quantization_config.get("quant_method") != cls.quant_method or quantization_config.get("bits") != 8:
            raise ValueError(f"int8-channel: expected quant_method {cls.quant_method!r} and bits 8")
        return cls(quantization_config.get("modules_to_not_convert"))

    def to_config(self) -> dict:
        return {"quant_method": self.quant_method, "bits": 8, "modules_to_not_convert": self.modules_to_not_convert}

    def convert_linear(self, prefix, weight, bias):
        q, scale = quantize(weight)
        return {"weight": q, "weight_scale": scale} | ({"bias": bias} if bias is not None else {})

    def linear_from_float(self, linear: nn.Linear) -> nn.Module:
        layer = self.empty_linear(linear.in_features, linear.out_features, linear.bias is not None,
                                  linear.weight.dtype, linear.weight.device)
        q, scale = quantize(linear.weight.detach())
        layer.weight.data.copy_(q)
        layer.weight_scale.data.copy_(scale)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    def empty_linear(self, in_features, out_features, bias, dtype, device=None) -> nn.Module:
        return Int8ChannelLinear(in_features, out_features, bias, dtype, device)
