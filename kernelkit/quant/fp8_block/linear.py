"""``Fp8BlockLinear``: a linear layer with block-FP8 weights and dynamic per-token-group FP8 activations.

forward(x): activations are quantized per token and group of block_k columns
(``per_token_group_quant_fp8``), then multiplied with the weight by ``w8a8_block_fp8_matmul``. The same two
ops run on GPU (CUDA/Triton kernels) and CPU (their torch references), so CPU results carry the same
quantization error as GPU ones. When K is not a multiple of block_k (SmolLM2: K = 576), x is zero-padded to
the next multiple for quantization only; zeros change no group's amax, so this equals quantizing a ragged last
group by itself.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul
from kernelkit.quant.fp8_block.format import quantize_weight


class Fp8BlockLinear(nn.Module):
    """y = x @ dequant(weight).T + bias with FP8 block weights; parameters named as in the checkpoint.

    Attributes:
        weight: [out_features, in_features] float8_e4m3fn.
        weight_scale_inv: [ceil(out/bn), ceil(in/bk)] float32.
        bias: [out_features] in the activation dtype, or None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 block_size: tuple[int, int] = (128, 128), dtype: torch.dtype = torch.bfloat16,
                 device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.block_size = in_features, out_features, tuple(block_size)
        bn, bk = self.block_size
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float8_e4m3fn, device=device),
                                   requires_grad=False)
        self.weight_scale_inv = nn.Parameter(
            torch.empty(-(-out_features // bn), -(-in_features // bk), dtype=torch.float32, device=device),
            requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear, block_size: tuple[int, int] = (128, 128),
                   scale_ue8m0: bool = False) -> Fp8BlockLinear:
        """Quantize a float nn.Linear (on its device)."""
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, block_size,
                    dtype=weight.dtype, device=weight.device)
        q, scale = quantize_weight(weight, block_size, scale_ue8m0)
        layer.weight.data.copy_(q)
        layer.weight_scale_inv.data.copy_(scale)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.in_features
        block_k = self.block_size[1]
        x2 = x.reshape(-1, k)
        pad = -k % block_k
        if pad:
            x2 = torch.nn.functional.pad(x2, (0, pad))
        q, scales = per_token_group_quant_fp8(x2, block_k, column_major_scales=True)
        out = w8a8_block_fp8_matmul(q[:, :k], self.weight, scales, self.weight_scale_inv, self.block_size, x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block_size={self.block_size}"
