"""msModelSlim W4A8_DYNAMIC (per channel, ``version`` 1.0.0) on the layer contract: the weight format as its
AscendV1 saver writes it (symmetric int4, amax / 7, two output rows per byte with the even row in the low nibble,
``scale_bias`` = 8 * sum_k q * scale, [N, 16] partial sums for row layers), and a merged q/k/v layer of the
method against int8 activations times the dequantized int4 weights."""

import pytest
import torch
from torch import nn

from kernelkit.layers import QKVParallelLinear, QuantContext, load_tensors
from kernelkit.ops.int4_pack import unpack_int4
from kernelkit.ops.quant.reference import per_token_quant_int8_ref
from kernelkit.quant.modelslim.format import dequantize, quantize_weight_w4a8
from kernelkit.quant.modelslim.linear import W4A8DynamicLinearMethod


def test_weight_format_is_packed_symmetric_int4_per_channel():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 96, generator=g) * 0.05
    column, row = quantize_weight_w4a8(w, row_parallel=False), quantize_weight_w4a8(w, row_parallel=True)
    q = unpack_int4(column["weight"])
    assert column["weight"].shape == (20, 96) and q.abs().max() == 7 and q.min() >= -8
    assert torch.equal(column["weight_scale"], w.abs().amax(1, keepdim=True) / 7) and not column["weight_offset"].any()
    deq = dequantize(column)
    assert ((deq - w).abs() <= column["weight_scale"] / 2 + 1e-7).all()
    assert column["scale_bias"].shape == (40, 1) and row["scale_bias"].shape == (40, 16)
    torch.testing.assert_close(column["scale_bias"], 8 * deq.sum(1, keepdim=True))
    torch.testing.assert_close(row["scale_bias"], 8 * deq.view(40, 16, 6).sum(-1))
    with pytest.raises(ValueError, match=r"\[39, 96\] cannot be stored \(N must be even"):
        quantize_weight_w4a8(w[:39], row_parallel=False)
    with pytest.raises(ValueError, match="K a multiple of 16 for a row layer"):
        quantize_weight_w4a8(w[:, :40], row_parallel=True)


class _Scheme:
    def linear_method(self, prefix):
        return W4A8DynamicLinearMethod()

    def moe_method(self, prefix):
        return None


def test_merged_layer_is_int8_activations_times_int4_weights():
    g = torch.Generator().manual_seed(1)
    parts = [torch.randn(n, 96, generator=g) * 0.05 for n in (64, 32, 32)]
    layer = QKVParallelLinear(96, 32, 2, 1, quant=QuantContext(_Scheme(), {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}),
                              prefix="qkv_proj")
    tensors = [(f"{name}.{suffix}", t, "test") for name, w in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True)
               for suffix, t in quantize_weight_w4a8(w, row_parallel=False).items()]
    load_tensors(nn.ModuleDict({"qkv_proj": layer}), tensors,
                 [(f"{p}.", "qkv_proj.", i) for i, p in enumerate(("q_proj", "k_proj", "v_proj"))])
    assert layer.weight.shape == (128, 96) and layer.scale_bias.shape == (128, 1)
    x = torch.randn(7, 96, generator=g)
    q, s = per_token_quant_int8_ref(x)
    w = torch.cat([dequantize(quantize_weight_w4a8(p, row_parallel=False)) for p in parts])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), (q.float() * s) @ w.t(), rtol=1e-5, atol=1e-5)
    assert layer(x[:0]).shape == (0, 128)
