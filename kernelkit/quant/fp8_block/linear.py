"""``Fp8BlockLinearMethod``: block-FP8 weights with dynamic per-token-group FP8 activations, for any linear
layer of the layer contract (``kernelkit.layers``), merged ones included.

Parameters (checkpoint names): ``weight`` [sum(N parts), K] float8_e4m3fn and ``weight_scale_inv``
[sum(ceil(N_i / bn)), ceil(K / bk)] float32: each part keeps its own block-scale rows, as its checkpoint has
them.

apply(x): x is quantized once per token and group of bk columns (``per_token_group_quant_fp8``), then
multiplied by ``w8a8_block_fp8_matmul``; the same two ops run on GPU (CUDA/Triton kernels) and CPU (their
torch references). When K is not a multiple of bk (SmolLM2: K = 576 with 128-blocks), x is zero-padded for
quantization only; zeros change no group's amax.

The merging rule, the one place it lives: consecutive parts share one GEMM as long as every part but the last
of the run is a whole number of bn-row blocks (then the parts' scale rows are exactly the merged weight's
block rows); a part that ends inside a block closes its run. SmolLM2's q/k/v (576, 192, 192) with 64-blocks:
one GEMM; with 128-blocks: three, over row views of the same parameters, after one activation quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit.layers.base import LinearMethod, partitioned_loader, set_weight_attrs
from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul


def gemm_runs(sizes: list[int], block_n: int) -> list[tuple[int, int, int, int]]:
    """(first row, rows, first scale row, scale rows) of each GEMM the merging rule gives for these parts."""
    runs: list[list[int]] = [[sizes[0]]]
    for size in sizes[1:]:
        if runs[-1][-1] % block_n == 0:
            runs[-1].append(size)
        else:
            runs.append([size])
    out, row, scale_row = [], 0, 0
    for run in runs:
        rows, scale_rows = sum(run), sum(-(-s // block_n) for s in run)
        out.append((row, rows, scale_row, scale_rows))
        row, scale_row = row + rows, scale_row + scale_rows
    return out


@dataclass(frozen=True)
class Fp8BlockLinearMethod(LinearMethod):
    """Block-FP8 (DeepSeek-V3) linear layers: ``block_size`` = (bn, bk) of the weight blocks."""

    block_size: tuple[int, int] = (128, 128)

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        bn, bk = self.block_size
        weight = torch.empty(sum(output_partition_sizes), input_size, dtype=torch.float8_e4m3fn)
        scales = torch.empty(sum(-(-s // bn) for s in output_partition_sizes), -(-input_size // bk),
                             dtype=torch.float32)
        layer.register_parameter("weight", set_weight_attrs(
            nn.Parameter(weight, requires_grad=False), weight_loader=partitioned_loader(output_partition_sizes),
            output_dim=0, input_dim=1))
        layer.register_parameter("weight_scale_inv", set_weight_attrs(  # one scale per bn x bk block
            nn.Parameter(scales, requires_grad=False),
            weight_loader=partitioned_loader(output_partition_sizes, divisor=bn),
            output_dim=0, input_dim=1, output_per_entry=bn, input_per_entry=bk))

    def process_weights_after_loading(self, layer):
        layer.gemm_runs = gemm_runs(layer.output_partition_sizes, self.block_size[0])

    def apply(self, layer, x, bias=None):
        k, block_k = layer.input_size, self.block_size[1]
        x2 = x.reshape(-1, k)
        pad = -k % block_k
        if pad:
            x2 = torch.nn.functional.pad(x2, (0, pad))
        q, scales = per_token_group_quant_fp8(x2, block_k, column_major_scales=True)
        q = q[:, :k]
        runs = getattr(layer, "gemm_runs", None) or gemm_runs(layer.output_partition_sizes, self.block_size[0])
        if len(runs) == 1:
            out = w8a8_block_fp8_matmul(q, layer.weight, scales, layer.weight_scale_inv, self.block_size, x.dtype)
        else:
            out = torch.cat([w8a8_block_fp8_matmul(q, layer.weight[r:r + n], scales, layer.weight_scale_inv[s:s + m],
                                                   self.block_size, x.dtype) for r, n, s, m in runs], dim=-1)
        if bias is not None:
            out = out + bias
        return out.view(*x.shape[:-1], layer.output_size)
