"""``W8A8DynamicLinearMethod``: msModelSlim's W8A8_DYNAMIC linear layers on NVIDIA GPUs: int8 weights with one
scale per output channel, activations quantized to int8 per token at run time, one int8 GEMM
(``int8_scaled_mm``: cuBLAS int8 tensor cores through ``torch._int_mm``).

Parameters (checkpoint names, msModelSlim's): ``weight`` int8 [sum(N parts), K], ``weight_scale`` and
``weight_offset`` fp32 [sum(N parts), 1] (a checkpoint's bf16 or fp16 values are widened on loading). The
dequantized weight is (weight - weight_offset) * weight_scale; W8A8_DYNAMIC weights are symmetric, so the
offsets are zero, and a layer whose offsets are not is refused after loading (naming it) rather than computed
wrongly: the int8 GEMM has no zero-point term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit.layers.base import LinearMethod, partitioned_loader, set_weight_attrs
from kernelkit.ops import per_token_quant_int8
from kernelkit.ops.int8_gemm.ops import int8_scaled_mm


@dataclass(frozen=True)
class W8A8DynamicLinearMethod(LinearMethod):
    """Per-channel int8 weights x per-token dynamic int8 activations."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        rows = sum(output_partition_sizes)
        loader = partitioned_loader(output_partition_sizes)
        params = (("weight", (rows, input_size), torch.int8), ("weight_scale", (rows, 1), torch.float32),
                  ("weight_offset", (rows, 1), torch.float32))
        for name, shape, dtype in params:
            layer.register_parameter(name, set_weight_attrs(
                nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False), weight_loader=loader))

    def process_weights_after_loading(self, layer):
        if layer.weight_offset.any():
            raise ValueError(f"{layer.prefix}: W8A8_DYNAMIC weight_offset is not zero (asymmetric int8 weights); "
                             "the int8 GEMM has no zero-point term")

    def apply(self, layer, x, bias=None):
        x2 = x.reshape(-1, layer.input_size)
        q, scales = per_token_quant_int8(x2)
        out = int8_scaled_mm(q, layer.weight, scales, layer.weight_scale, x.dtype, bias)
        return out.view(*x.shape[:-1], layer.output_size)
