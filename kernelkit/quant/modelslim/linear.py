"""``W8A8DynamicLinearMethod`` and ``W4A8DynamicLinearMethod``: msModelSlim's W8A8_DYNAMIC linear layers
(and per-channel W4A8_DYNAMIC ones, below) on NVIDIA GPUs: int8 weights with one
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
from kernelkit.ops.int4_pack import unpack_int4
from kernelkit.ops.int8_gemm.ops import int8_scaled_mm


@dataclass(frozen=True)
class W8A8DynamicLinearMethod(LinearMethod):
    """Per-channel int8 weights x per-token dynamic int8 activations."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        rows = sum(output_partition_sizes)
        loader = partitioned_loader(output_partition_sizes)
        params = (("weight", (rows, input_size), torch.int8, 1), ("weight_scale", (rows, 1), torch.float32, None),
                  ("weight_offset", (rows, 1), torch.float32, None))
        for name, shape, dtype, input_dim in params:  # per-channel scales: split with the rows, whole across K
            layer.register_parameter(name, set_weight_attrs(
                nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False), weight_loader=loader,
                output_dim=0, input_dim=input_dim))

    def process_weights_after_loading(self, layer):
        if layer.weight_offset.any():
            raise ValueError(f"{layer.prefix}: W8A8_DYNAMIC weight_offset is not zero (asymmetric int8 weights); "
                             "the int8 GEMM has no zero-point term")

    def apply(self, layer, x, bias=None):
        x2 = x.reshape(-1, layer.input_size)
        q, scales = per_token_quant_int8(x2)
        out = int8_scaled_mm(q, layer.weight, scales, layer.weight_scale, x.dtype, bias)
        return out.view(*x.shape[:-1], layer.output_size)


def scale_bias_loader(sizes: list[int]):
    """``weight_loader`` of W4A8_DYNAMIC's ``scale_bias`` ([N, 1] for column layers, [N, 16] for row layers:
    the width comes from the checkpoint). Only its rows are checked: it is a term of Ascend's int4 kernels,
    which the int8 GEMM here does not need (the weight and its scale define the layer)."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    def load(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        rows = sum(sizes) if shard_id is None else sizes[shard_id]
        if loaded_weight.dim() != 2 or loaded_weight.shape[0] != rows:
            raise ValueError(f"scale_bias of shape {list(loaded_weight.shape)}, expected [{rows}, 1 or 16]")
        if param.shape[1] != loaded_weight.shape[1]:
            param.data = param.data.new_zeros(param.shape[0], loaded_weight.shape[1])
        param.data.narrow(0, 0 if shard_id is None else offsets[shard_id], rows).copy_(loaded_weight)

    return load


@dataclass(frozen=True)
class W4A8DynamicLinearMethod(W8A8DynamicLinearMethod):
    """Per-channel int4 weights x per-token dynamic int8 activations: the int4 values are unpacked to int8 once
    after loading and run through the W8A8 GEMM (``int8_scaled_mm``), so the layer computes exactly
    q * weight_scale against int8 activations (vllm-ascend and sglang run dense W4A8 layers weight-only, with
    bf16 activations; their MoE experts take int8 activations, as here). ``packed``: the checkpoint stores two
    int4 values per byte along N (``version`` 1.0.0), else one per byte. Parameters: ``weight`` int8 [N/2, K]
    (or [N, K]), ``weight_scale`` / ``weight_offset`` fp32 [N, 1], ``scale_bias`` (see ``scale_bias_loader``)."""

    packed: bool = True

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        super().create_weights(layer, input_size, output_partition_sizes, params_dtype)
        rows = sum(output_partition_sizes)
        if self.packed:
            layer.weight = set_weight_attrs(nn.Parameter(torch.empty(rows // 2, input_size, dtype=torch.int8),
                                                         requires_grad=False),
                                            weight_loader=partitioned_loader(output_partition_sizes, divisor=2,
                                                                             exact=True))
        layer.register_parameter("scale_bias", set_weight_attrs(
            nn.Parameter(torch.zeros(rows, 1), requires_grad=False),
            weight_loader=scale_bias_loader(list(output_partition_sizes))))

    def process_weights_after_loading(self, layer):
        super().process_weights_after_loading(layer)
        if self.packed:
            layer.weight = nn.Parameter(unpack_int4(layer.weight.data, layer.output_size), requires_grad=False)
