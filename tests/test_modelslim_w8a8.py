"""msModelSlim W8A8_DYNAMIC on the layer contract: the weight format (symmetric per channel, offsets zero), a
merged q/k/v layer of the method against the float layers with the same int8 weights and int8 activations,
and the refusal of non-zero offsets."""

import pytest
import torch
from torch import nn

from kernelkit.layers import QKVParallelLinear, QuantContext, load_tensors
from kernelkit.ops.quant.reference import per_token_quant_int8_ref
from kernelkit.quant.modelslim.format import dequantize_weight, quantize_weight
from kernelkit.quant.modelslim.linear import W8A8DynamicLinearMethod


class _Scheme:
    def linear_method(self, prefix):
        return W8A8DynamicLinearMethod()

    def moe_method(self, prefix):
        return None


def test_weight_format_is_symmetric_per_channel():
    w = torch.randn(40, 96) * 0.05
    w[3] = 0
    out = quantize_weight(w)
    assert out["weight"].dtype == torch.int8 and out["weight"].abs().max() == 127
    assert out["weight_scale"].shape == (40, 1) and not out["weight_offset"].any() and out["weight_scale"][3] == 1
    deq = dequantize_weight(**out)
    assert ((deq - w).abs() <= out["weight_scale"] / 2 + 1e-7).all()
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_weight(torch.tensor([[float("nan"), 1.0]]))


def _merged(parts, offsets=None):
    layer = QKVParallelLinear(96, 32, 2, 1, quant=QuantContext(_Scheme(), {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}),
                              prefix="qkv_proj")
    tensors = []
    for name, w in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
        out = quantize_weight(w)
        if offsets:
            out["weight_offset"] = out["weight_offset"] + 1
        tensors += [(f"{name}.{suffix}", t.to(torch.bfloat16) if suffix != "weight" else t, "test")
                    for suffix, t in out.items()]
    rules = [(f"{p}.", "qkv_proj.", i) for i, p in enumerate(("q_proj", "k_proj", "v_proj"))]
    load_tensors(nn.ModuleDict({"qkv_proj": layer}), tensors, rules)
    return layer


def test_merged_layer_is_int8_activations_times_int8_weights():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 96, generator=g) * 0.05 for n in (64, 32, 32)]
    layer = _merged(parts)
    x = torch.randn(7, 96, generator=g)
    q, s = per_token_quant_int8_ref(x)
    w = torch.cat([dequantize_weight(**{k: v.to(torch.bfloat16).float() if k != "weight" else v
                                        for k, v in quantize_weight(p).items()}) for p in parts])
    expected = (q.float() * s) @ w.t()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer(x[:0]).shape == (0, 128)


def test_nonzero_offsets_are_refused():
    parts = [torch.randn(n, 96) * 0.05 for n in (64, 32, 32)]
    with pytest.raises(ValueError, match="qkv_proj: W8A8_DYNAMIC weight_offset is not zero"):
        _merged(parts, offsets=True)
