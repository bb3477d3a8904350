"""``W8A8DynamicMoEMethod`` (and its int4 sibling ``W4A8DynamicMoEMethod``, below): msModelSlim's
W8A8_DYNAMIC experts on NVIDIA GPUs: int8 expert weights with one
fp32 scale per output channel, activations quantized to int8 per token at run time, the Triton fused MoE
kernel's int8 path through the ``fused_experts`` op (``kernelkit.ops.moe``; on the CPU its reference).

Parameters (vLLM's and sglang's names for these checkpoints, as vllm-ascend's ``AscendW8A8DynamicFusedMoEMethod``
creates them): ``w13_weight`` int8 [E, 2I, H], ``w13_weight_scale`` / ``w13_weight_offset`` fp32 [E, 2I, 1],
``w2_weight`` int8 [E, H, I], ``w2_weight_scale`` / ``w2_weight_offset`` fp32 [E, H, 1], filled from each
expert's ``experts.{e}.{gate,up,down}_proj.{weight,weight_scale,weight_offset}``. Offsets must be zero
(symmetric weights), as for the linear method. W8A8 experts split over tensor-parallel ranks (``FusedMoE``);
W4A8's packed weights do not declare a split yet and run at tensor-parallel size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit.layers.base import MoEMethod, set_weight_attrs
from kernelkit.layers.moe import expert_loader
from kernelkit.ops.moe.ops import fused_experts


@dataclass(frozen=True)
class W8A8DynamicMoEMethod(MoEMethod):
    """Per-channel int8 experts x per-token dynamic int8 activations."""

    int4 = False

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size, params_dtype):
        for prefix, rows, cols, stacked in (("w13", 2 * intermediate_size, hidden_size, True),
                                            ("w2", hidden_size, intermediate_size, False)):
            loader = expert_loader(intermediate_size, stacked)
            for suffix, shape, dtype, input_dim in (("weight", (num_experts, rows, cols), torch.int8, 1),
                                                    ("weight_scale", (num_experts, rows, 1), torch.float32, None),
                                                    ("weight_offset", (num_experts, rows, 1), torch.float32, None)):
                param = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
                # one expert's checkpoint tensor: [rows, cols] weights, [rows, 1] per-channel scales
                layer.register_parameter(f"{prefix}_{suffix}", set_weight_attrs(
                    param, weight_loader=loader, output_dim=0, input_dim=input_dim))

    def process_weights_after_loading(self, layer):
        if layer.w13_weight_offset.any() or layer.w2_weight_offset.any():
            raise ValueError(f"{layer.prefix}: W8A8_DYNAMIC expert weight_offset is not zero (asymmetric int8 "
                             "weights); the int8 GEMM has no zero-point term")

    def apply(self, layer, x, topk_weights, topk_ids):
        return fused_experts(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids, layer.w13_weight_scale,
                             layer.w2_weight_scale, int4=self.int4)


@dataclass(frozen=True)
class W4A8DynamicMoEMethod(W8A8DynamicMoEMethod):
    """Per-channel int4 experts (two values per byte along the output rows, ``version`` 1.0.0) x per-token
    dynamic int8 activations: the Triton kernel unpacks the int4 pairs in registers, so the experts' weight
    bytes are half of W8A8's. Parameters as sglang's ``modelslim_w4a8_int8_moe`` creates them: ``w13_weight``
    int8 [E, I, H], ``w2_weight`` int8 [E, H/2, I], scales and zero offsets fp32 [E, 2I, 1] / [E, H, 1], and
    ``w13_scale_bias`` [E, 2I, 1], ``w2_scale_bias`` [E, H, 16] (Ascend's kernel term, loaded and unused)."""

    int4 = True

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size, params_dtype):
        super().create_weights(layer, num_experts, hidden_size, intermediate_size, params_dtype)
        if intermediate_size % 2 or hidden_size % 2:
            raise ValueError(f"{layer.prefix}: W4A8_DYNAMIC experts need even sizes, got H = {hidden_size}, "
                             f"I = {intermediate_size}")
        for prefix, rows, cols, stacked, bias_width in (("w13", intermediate_size, hidden_size, True, 1),
                                                        ("w2", hidden_size // 2, intermediate_size, False, 16)):
            weight = nn.Parameter(torch.empty(num_experts, rows, cols, dtype=torch.int8), requires_grad=False)
            setattr(layer, f"{prefix}_weight", set_weight_attrs(
                weight, weight_loader=expert_loader(intermediate_size // 2, stacked)))
            bias_rows = 2 * intermediate_size if stacked else hidden_size
            layer.register_parameter(f"{prefix}_scale_bias", set_weight_attrs(
                nn.Parameter(torch.empty(num_experts, bias_rows, bias_width), requires_grad=False),
                weight_loader=expert_loader(intermediate_size, stacked)))

