"""The layer contract's merged layers: one layer (one ``apply``) computes what the separate checkpoint modules
did, for unquantized and block-FP8 weights, and the fp8-block merging rule (scale rows per part; one GEMM
while every part but the last is whole blocks)."""

import pytest
import torch
from torch import nn

from kernelkit.layers import MergedColumnParallelLinear, QKVParallelLinear, QuantContext, load_tensors
from kernelkit.quant import quantize_
from kernelkit.quant.fp8_block.linear import gemm_runs
from kernelkit.quant.fp8_block.scheme import Fp8BlockScheme

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def _parts(outs, bias, dtype=torch.float32, k=96):
    torch.manual_seed(sum(outs))
    return [nn.Linear(k, n, bias=bias, dtype=dtype) for n in outs]


def _load(layer, parts, scheme=None):
    """The parts' checkpoint tensors (as ``kernelkit convert`` writes them) into the merged layer."""
    tensors = []
    for name, part in zip(layer.checkpoint_prefixes, parts, strict=True):
        out = {"weight": part.weight.detach()} if scheme is None else scheme.convert_linear(name, part.weight, None)
        if part.bias is not None:
            out["bias"] = part.bias.detach()
        tensors += [(f"{name}.{suffix}", t, "test") for suffix, t in out.items()]
    rules = [(f"{p}.", "qkv_proj.", i) for i, p in enumerate(("q_proj", "k_proj", "v_proj"))]
    load_tensors(nn.ModuleDict({"qkv_proj": layer}), tensors, rules)
    return layer


@pytest.mark.parametrize("bias", [False, True])
def test_merged_linear_equals_concatenated_outputs(bias):
    parts = _parts([64, 32, 32], bias)
    layer = _load(QKVParallelLinear(96, 32, 2, 1, bias, quant=QuantContext(None, PACKED), prefix="qkv_proj"), parts)
    assert layer.checkpoint_prefixes == ["q_proj", "k_proj", "v_proj"]
    x = torch.randn(5, 96)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.cat([p(x) for p in parts], -1), rtol=0, atol=0)


@pytest.mark.parametrize("sizes, block, runs", [([64, 32, 32], 32, 1), ([576, 192, 192], 128, 3),
                                                ([576, 192, 192], 64, 1), ([40, 32, 64], 32, 2)])
def test_fp8_block_merged_layer_equals_its_parts(sizes, block, runs):
    scheme = Fp8BlockScheme((block, block))
    parts = _parts(sizes, False, torch.bfloat16, k=192)
    layer = QKVParallelLinear(192, 1, sizes[0], sizes[1], quant=QuantContext(scheme, PACKED), prefix="qkv_proj",
                              params_dtype=torch.bfloat16) if sizes[1] == sizes[2] else None
    if layer is None:  # parts of unequal sizes: a merged column layer of three
        layer = MergedColumnParallelLinear(192, sizes, quant=QuantContext(scheme, {"qkv_proj": ["q_proj", "k_proj",
                                                                                               "v_proj"]}),
                                           prefix="qkv_proj", params_dtype=torch.bfloat16)
    _load(layer, parts, scheme)
    assert len(layer.gemm_runs) == runs == len(gemm_runs(sizes, block))
    assert layer.weight_scale_inv.shape[0] == sum(-(-s // block) for s in sizes)
    separate = [quantize_(nn.Sequential(p), scheme)[0] for p in parts]
    x = torch.randn(3, 192, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.cat([s(x) for s in separate], -1), rtol=0, atol=0)


def test_parts_quantized_differently_cannot_merge():
    scheme = Fp8BlockScheme(modules_to_not_convert=["k_proj"])
    with pytest.raises(ValueError, match=r"parts \['q_proj', 'k_proj', 'v_proj'\] are quantized differently"):
        QKVParallelLinear(96, 32, 2, 1, quant=QuantContext(scheme, PACKED), prefix="qkv_proj")
