"""Linear methods of AWQ W4A16 checkpoints, one per checkpoint layout. After loading, both repack the weight
into kernelkit's tensor-core layout (``kernelkit.ops.w4a16.mma_layout``; computed by ``w4a16_gemm``) where the
group size allows it (a multiple of 64), else into AutoAWQ's GEMM layout (computed by ``awq_gemm``).

- ``AwqLinearMethod``: AutoAWQ GEMM checkpoints (``qweight`` [K, N/8], ``qzeros`` [K/G, N/8], ``scales``
  [K/G, N]); the output dimension is dim 1, packed 8 to an int32, so each part of a merged layer must be a
  multiple of 8 wide.
- ``PackedW4LinearMethod``: compressed-tensors pack-quantized checkpoints (``weight_packed`` [N, K/8],
  ``weight_scale`` [N, K/G], ``weight_zero_point`` [N/8, K/G], ``weight_shape`` [2] per part); repacked into
  the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit.layers.base import LinearMethod, partitioned_loader, set_weight_attrs
from kernelkit.ops.w4a16 import mma_layout
from kernelkit.ops.w4a16.ops import awq_gemm, w4a16_gemm
from kernelkit.quant.awq.format import pack_autoawq, unpack_autoawq, unpack_compressed_tensors


def _param(layer: nn.Module, name: str, tensor: torch.Tensor, loader, **layout) -> None:
    """Register a parameter; ``layout``: its tensor-parallel layout (``kernelkit.layers.sharding``), if any."""
    layer.register_parameter(name, set_weight_attrs(nn.Parameter(tensor, requires_grad=False), weight_loader=loader,
                                                    **layout))


def _shape_loader(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
    """``weight_shape`` [2] of part ``shard_id`` into row shard_id of [parts, 2]."""
    row = 0 if shard_id is None else shard_id
    if tuple(loaded_weight.shape) != (2,) or not 0 <= row < param.shape[0]:
        raise ValueError(f"weight_shape must be [2] for one of {param.shape[0]} parts, got "
                         f"{list(loaded_weight.shape)} for part {shard_id}")
    param.data[row].copy_(loaded_weight)


def _check_group(input_size: int, group_size: int) -> None:
    if input_size % group_size:
        raise ValueError(f"AWQ: group size {group_size} does not divide the layer's input size {input_size}")


def _repack(layer: nn.Module, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> None:
    """Replace the layer's checkpoint tensors by (q [N, K], scales, zeros [N, K/G]) in the kernel's layout:
    ``qweight``, ``qzeros`` (uint8, unpacked) and ``scales`` in the tensor-core layout, else AutoAWQ's."""
    for name in [name for name, _ in layer.named_parameters(recurse=False) if name != "bias"]:
        delattr(layer, name)
    scales = scales.to(layer.params_dtype)
    if mma_layout.supports(layer.input_size, group_size) is None:
        tensors = dict(zip(("qweight", "qzeros", "scales"), mma_layout.repack_mma(q, zeros, scales, group_size),
                           strict=True))
    else:
        tensors = pack_autoawq(q, scales, zeros) | {"scales": scales.t().contiguous()}
    layer.w4_layout = "mma" if tensors["qweight"].dim() == 4 else "autoawq"
    for name, tensor in tensors.items():
        layer.register_parameter(name, nn.Parameter(tensor, requires_grad=False))


def _apply(layer: nn.Module, x: torch.Tensor, bias, group_size: int) -> torch.Tensor:
    x2 = x.reshape(-1, layer.input_size)
    if layer.w4_layout == "mma":
        y = w4a16_gemm(x2, layer.qweight, layer.qzeros, layer.scales, layer.output_size)
    else:
        y = awq_gemm(x2, layer.qweight, layer.qzeros, layer.scales, group_size)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], layer.output_size)


@dataclass(frozen=True)
class AwqLinearMethod(LinearMethod):
    """AutoAWQ GEMM layout, ``group_size`` G."""

    group_size: int = 128

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        _check_group(input_size, self.group_size)
        n, groups = sum(output_partition_sizes), input_size // self.group_size
        packed = partitioned_loader(output_partition_sizes, dim=1, divisor=8, exact=True)
        g = self.group_size  # tensor-parallel layout: K rows down, N columns across (8 per int32), groups of g rows
        _param(layer, "qweight", torch.empty(input_size, n // 8, dtype=torch.int32), packed,
               input_dim=0, output_dim=1, output_per_entry=8)
        _param(layer, "qzeros", torch.empty(groups, n // 8, dtype=torch.int32), packed,
               input_dim=0, input_per_entry=g, output_dim=1, output_per_entry=8)
        _param(layer, "scales", torch.empty(groups, n, dtype=torch.float16),
               partitioned_loader(output_partition_sizes, dim=1), input_dim=0, input_per_entry=g, output_dim=1)

    def process_weights_after_loading(self, layer):
        if mma_layout.supports(layer.input_size, self.group_size) is not None:  # the checkpoint's layout stays
            layer.scales.data = layer.scales.data.to(layer.params_dtype)
            layer.w4_layout = "autoawq"
            return
        q, scales, zeros = unpack_autoawq(layer.qweight.data, layer.qzeros.data, layer.scales.data)
        _repack(layer, q, scales, zeros, self.group_size)

    def apply(self, layer, x, bias=None):
        return _apply(layer, x, bias, self.group_size)


@dataclass(frozen=True)
class PackedW4LinearMethod(LinearMethod):
    """compressed-tensors pack-quantized, asymmetric 4-bit groups of ``group_size``."""

    group_size: int = 128

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        _check_group(input_size, self.group_size)
        n, groups, parts = sum(output_partition_sizes), input_size // self.group_size, len(output_partition_sizes)
        rows = partitioned_loader(output_partition_sizes)
        _param(layer, "weight_packed", torch.empty(n, -(-input_size // 8), dtype=torch.int32), rows)
        _param(layer, "weight_scale", torch.empty(n, groups, dtype=params_dtype), rows)
        _param(layer, "weight_zero_point", torch.empty(n // 8, groups, dtype=torch.int32),
               partitioned_loader(output_partition_sizes, divisor=8, exact=True))
        _param(layer, "weight_shape", torch.empty(parts, 2, dtype=torch.int64), _shape_loader)

    def process_weights_after_loading(self, layer):
        shapes = [tuple(s) for s in layer.weight_shape.tolist()]
        expected = [(n, layer.input_size) for n in layer.output_partition_sizes]
        if shapes != expected:
            raise ValueError(f"{layer.prefix}: weight_shape {shapes} contradicts the layer's parts {expected}")
        q, scales, zeros = unpack_compressed_tensors(layer.weight_packed.data, layer.weight_scale.data,
                                                     layer.weight_zero_point.data,
                                                     torch.tensor([layer.output_size, layer.input_size]))
        _repack(layer, q, scales, zeros, self.group_size)

    def apply(self, layer, x, bias=None):
        return _apply(layer, x, bias, self.group_size)
