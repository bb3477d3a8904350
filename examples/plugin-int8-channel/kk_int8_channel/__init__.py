"""Per-output-channel int8 weight-only quantization, as a kernelkit plugin on the layer contract.

Checkpoint tensors per linear layer: ``weight`` int8 [N, K] and ``weight_scale`` float32 [N, 1], where
scale[n] = max(max|w[n, :]|, 1e-10) / 127 and weight = round(w / scale) (half to even). The linear method
dequantizes on the fly: y = x @ (weight * weight_scale).T + bias. Merged layers (qkv_proj, gate_up_proj) stack
their parts' rows in both parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit.layers import LinearMethod, set_weight_attrs
from kernelkit.layers.base import partitioned_loader
from kernelkit.quant import QuantScheme


@dataclass(frozen=True)
class Int8ChannelLinearMethod(LinearMethod):
    """int8 weights with one float32 scale per output channel."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        n = sum(output_partition_sizes)
        for name, tensor in (("weight", torch.empty(n, input_size, dtype=torch.int8)),
                             ("weight_scale", torch.empty(n, 1, dtype=torch.float32))):
            param = nn.Parameter(tensor, requires_grad=False)
            layer.register_parameter(name, set_weight_attrs(
                param, weight_loader=partitioned_loader(output_partition_sizes)))

    def apply(self, layer, x, bias=None):
        w = (layer.weight.float() * layer.weight_scale).to(x.dtype)
        return nn.functional.linear(x, w, bias)


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

    def linear_method(self, prefix: str) -> Int8ChannelLinearMethod | None:
        return Int8ChannelLinearMethod() if self.quantizes(prefix) else None
