"""Checkpoints written by msModelSlim 26.1.0 itself (``tests/data/msmodelslim``: tiny random Qwen3 and Qwen3-MoE
models quantized by its own ``msmodelslim quant`` CLI on a CPU, with its flex_smooth_quant smoothing folded into
the norms and weights; ``recipe/README.md`` gives the commands and versions). The engine reads each one with the
methods its description names, and its logits follow transformers on msModelSlim's bf16 source model (the
smoothing preserves the function; the difference left is the int8/int4 quantization) and, tighter, transformers
on the checkpoint's dequantized weights (the difference left is the int8 activations); ``kernelkit eval``'s
loader reads the dense ones."""

import json
from pathlib import Path

import pytest
import torch
from engine_checks import prefill_logits
from safetensors.torch import load_file, save_file

from kernelkit.layers.moe import UnquantizedFusedMoEMethod
from kernelkit.quant.modelslim.format import dequantize
from kernelkit.quant.modelslim.linear import W4A8DynamicLinearMethod, W8A8DynamicLinearMethod
from kernelkit.quant.modelslim.moe import W4A8DynamicMoEMethod, W8A8DynamicMoEMethod
from kernelkit.serve import LLM

DATA = Path(__file__).parent / "data" / "msmodelslim"
IDS = [3, 77, 140, 9, 411, 250, 36, 502, 18, 64, 199, 5]
# name -> (source model, attention method, MLP/experts method, min cosine to the source, min cosine to dequantized);
# measured 2026-12-07: 0.99980 / 0.99991, 0.9795 / 0.99992, 0.99982 / 0.99994, 0.99962 / 0.99994
CHECKPOINTS = {
    "qwen3-w8a8-dynamic": ("src-qwen3", W8A8DynamicLinearMethod, W8A8DynamicLinearMethod, 0.999, 0.9995),
    "qwen3-w4a8-dynamic": ("src-qwen3", W4A8DynamicLinearMethod, W4A8DynamicLinearMethod, 0.97, 0.9995),
    "qwen3moe-w8a8-dynamic": ("src-qwen3moe", W8A8DynamicLinearMethod, W8A8DynamicMoEMethod, 0.999, 0.9995),
    "qwen3moe-w4a8-dynamic": ("src-qwen3moe", W8A8DynamicLinearMethod, W4A8DynamicMoEMethod, 0.999, 0.9995),
}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def _hf_logits(path: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


def _dequantized_copy(name: str, out: Path) -> Path:
    """The checkpoint's tensors with every quantized layer dequantized (fp32), as a plain HF directory."""
    src = DATA / name
    description = json.loads((src / "quant_model_description.json").read_text())
    tensors = {}
    for shard in sorted(src.glob("quant_model_weights-*.safetensors")):
        tensors |= load_file(shard)
    plain = {}
    for key, t in tensors.items():
        module, suffix = key.rsplit(".", 1)
        if description[key] == "FLOAT":
            plain[key] = t.float()
        elif suffix == "weight":
            plain[key] = dequantize({s: tensors[f"{module}.{s}"] for s in ("weight", "weight_scale", "weight_offset")})
    out.mkdir()
    save_file(plain, str(out / "model.safetensors"))
    (out / "config.json").write_text((src / "config.json").read_text())
    return out


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_engine_serves_what_msmodelslim_wrote(name, tmp_path):
    source, attention, mlp, to_source, to_dequantized = CHECKPOINTS[name]
    llm = LLM(str(DATA / name), device="cpu")
    layer = llm.engine.model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj.quant_method, attention)
    assert isinstance(layer.self_attn.o_proj.quant_method, attention)
    if "moe" in name:
        assert isinstance(layer.mlp.experts.quant_method, mlp)
        assert not isinstance(layer.mlp.experts.quant_method, UnquantizedFusedMoEMethod)
        assert layer.mlp.gate.weight.dtype != torch.int8  # the router stays float
    else:
        assert isinstance(layer.mlp.gate_up_proj.quant_method, mlp)
        assert isinstance(layer.mlp.down_proj.quant_method, mlp)
    ours = prefill_logits(llm, IDS)
    assert torch.isfinite(ours).all()
    to_src = _cosine(ours, _hf_logits(DATA / source))
    to_deq = _cosine(ours, _hf_logits(_dequantized_copy(name, tmp_path / "dequantized")))
    assert to_src > to_source and to_deq > to_dequantized, (to_src, to_deq)


@pytest.mark.parametrize("name", ["qwen3-w8a8-dynamic", "qwen3-w4a8-dynamic"])
def test_eval_loader_reads_what_msmodelslim_wrote(name):
    from kernelkit.eval.load import load_causal_lm

    model = load_causal_lm(DATA / name)
    with torch.no_grad():
        ours = model(torch.tensor([IDS])).logits[0]
    assert _cosine(ours, _hf_logits(DATA / CHECKPOINTS[name][0])) > CHECKPOINTS[name][3]
