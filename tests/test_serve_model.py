"""The engine model's merged projections: one GEMM computes what the separate layers did."""

import pytest
import torch
from torch import nn

from kernelkit.quant.fp8_block.linear import Fp8BlockLinear
from kernelkit.serve.model.llama import fuse_linears


def _linears(outs, bias, dtype=torch.float32):
    torch.manual_seed(sum(outs))
    return [nn.Linear(96, n, bias=bias, dtype=dtype) for n in outs]


@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_equals_concatenated_outputs(bias):
    parts = _linears([64, 32, 32], bias)
    fused = fuse_linears(parts)
    x = torch.randn(5, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), torch.cat([p(x) for p in parts], -1), rtol=0, atol=0)


def test_fused_fp8_block_linear_keeps_weights_and_scales():
    parts = [Fp8BlockLinear.from_float(lin, (32, 32)) for lin in _linears([64, 32, 40], False, torch.bfloat16)]
    fused = fuse_linears(parts)
    assert fused.weight_scale_inv.shape == (2 + 1 + 2, 3)
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), torch.cat([p(x) for p in parts], -1), rtol=0, atol=0)


def test_unfusable_layers_are_left_alone():
    # a q projection of 576 rows (SmolLM2) is not whole 128-row blocks: its last scale row would be shared
    parts = [Fp8BlockLinear.from_float(lin) for lin in _linears([576, 192, 192], False, torch.bfloat16)]
    assert fuse_linears(parts) is None
    assert fuse_linears([*_linears([32], False), *_linears([32], True)]) is None  # bias on one only
    assert fuse_linears([*_linears([32], False), Fp8BlockLinear(96, 128)]) is None  # mixed types
