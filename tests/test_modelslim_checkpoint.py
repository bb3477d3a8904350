"""Reading a msModelSlim W8A8_DYNAMIC checkpoint as msModelSlim's AscendV1 saver writes one (tensors named in
``quant_model_description.json`` with their types, ``quant_model_weights-*`` shards with an index, FLOAT
tensors in fp32, no ``quantization_config`` in config.json): the engine's layers, its logits against
transformers on the dequantized weights, a layer kept FLOAT, and descriptions it cannot run."""

import json

import pytest
import torch
from engine_checks import prefill_logits
from safetensors.torch import save_file
from tiny_llama import CONFIG, tiny_llama_tensors, write_tiny_tokenizer

from kernelkit.layers import CheckpointMismatch, UnquantizedLinearMethod
from kernelkit.quant import SchemeError
from kernelkit.quant.modelslim.format import dequantize_weight, quantize_weight
from kernelkit.quant.modelslim.linear import W8A8DynamicLinearMethod
from kernelkit.serve import LLM

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FLOAT_LAYER = "model.layers.1.mlp.down_proj"


def _write(path, types=None):
    """The tiny llama as msModelSlim W8A8_DYNAMIC (FLOAT_LAYER kept float); returns the dequantized tensors."""
    path.mkdir(parents=True, exist_ok=True)
    tensors, description, dequantized = {}, {}, {}
    for name, t in tiny_llama_tensors().items():
        module = name.rsplit(".", 1)[0]
        if module.rsplit(".", 1)[-1] in LINEARS and module != FLOAT_LAYER:
            out = quantize_weight(t)
            for suffix, v in out.items():
                tensors[f"{module}.{suffix}"], description[f"{module}.{suffix}"] = v, "W8A8_DYNAMIC"
            dequantized[name] = dequantize_weight(**out)
        else:
            tensors[name], description[name] = t.float(), "FLOAT"
            dequantized[name] = t.float()
    description.update(types or {})
    shard = "quant_model_weights-00001-of-00001.safetensors"
    save_file(tensors, str(path / shard))
    (path / "quant_model_weights.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(tensors, shard)}))
    (path / "quant_model_description.json").write_text(json.dumps(
        {"version": "1.0.0", "model_quant_type": "W8A8_DYNAMIC", "metadata": {}, "group_size": 0, "optional": {},
         **description}))
    (path / "config.json").write_text(json.dumps({**CONFIG, "eos_token_id": 1, "bos_token_id": 0}))
    write_tiny_tokenizer(path)
    return dequantized


def test_engine_reads_a_modelslim_checkpoint_and_matches_the_dequantized_model(tmp_path):
    from transformers import AutoModelForCausalLM

    dequantized = _write(tmp_path / "w8a8")
    llm = LLM(str(tmp_path / "w8a8"), device="cpu")
    layers = llm.engine.model.model.layers
    assert isinstance(layers[0].self_attn.qkv_proj.quant_method, W8A8DynamicLinearMethod)
    assert isinstance(layers[1].mlp.down_proj.quant_method, UnquantizedLinearMethod)
    assert isinstance(llm.engine.model.lm_head.quant_method, UnquantizedLinearMethod)

    reference = tmp_path / "reference"
    reference.mkdir()
    save_file({k: v.contiguous() for k, v in dequantized.items()}, str(reference / "model.safetensors"))
    (reference / "config.json").write_text((tmp_path / "w8a8" / "config.json").read_text())
    hf = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32).eval()
    ids = [0, 5, 17, 33, 101, 7, 250]
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0]
    err = (prefill_logits(llm, ids) - theirs).abs().max().item()
    assert 0 < err < 0.02 * theirs.abs().max().item()  # int8 activations: close, not equal


@pytest.mark.parametrize("kind, message", [
    ("W9A9", "unknown type 'W9A9' of tensor 'model.layers.0.mlp.up_proj.weight'"),
    ("W8A16", "tensor 'model.layers.0.mlp.up_proj.weight' is W8A16, which kernelkit does not run yet")])
def test_descriptions_it_cannot_run_are_named(tmp_path, kind, message):
    _write(tmp_path, {"model.layers.0.mlp.up_proj.weight": kind})
    with pytest.raises(SchemeError, match=message):
        LLM(str(tmp_path), device="cpu")


def test_per_group_w4a8_is_refused_by_name(tmp_path):
    _write(tmp_path, {"model.layers.0.mlp.up_proj.weight": "W4A8_DYNAMIC",
                      "model.layers.0.mlp.up_proj.weight_scale_second": "W4A8_DYNAMIC", "group_size": 64})
    with pytest.raises(SchemeError, match=r"up_proj.weight_scale_second': per-group W4A8_DYNAMIC \(group_size 64\) "
                                          "is not supported"):
        LLM(str(tmp_path), device="cpu")


def test_a_corrupt_description_names_the_file(tmp_path):
    _write(tmp_path)
    (tmp_path / "quant_model_description.json").write_text('{"version": "1.0.0",')
    with pytest.raises(ValueError, match=r"quant_model_description.json is not valid JSON"):
        LLM(str(tmp_path), device="cpu")


@pytest.mark.parametrize("damage, message", [
    ("drop model.layers.0.mlp.up_proj.weight_scale", r"missing tensors \['model.layers.0.mlp.up_proj.weight_scale'\]"),
    ("reshape model.layers.0.self_attn.k_proj.weight_scale",
     r"tensor model.layers.0.self_attn.k_proj.weight_scale does not fit model.layers.0.self_attn.qkv_proj"),
    ("float model.layers.1.mlp.down_proj.weight", r"model.layers.1.mlp.down_proj.weight is torch.int8")])
def test_checkpoints_that_disagree_with_their_description_are_named(tmp_path, damage, message):
    """A quantized layer's tensor missing or of the wrong shape, and a layer described FLOAT whose weight is
    int8: the error names the tensor."""
    from safetensors.torch import load_file

    _write(tmp_path)
    action, name = damage.split()
    shard = tmp_path / "quant_model_weights-00001-of-00001.safetensors"
    state = load_file(str(shard))
    if action == "drop":
        del state[name]
    elif action == "reshape":
        state[name] = state[name].flatten()
    else:
        state[name] = quantize_weight(state[name])["weight"]
    save_file(state, str(shard))
    with pytest.raises(CheckpointMismatch, match=message):
        LLM(str(tmp_path), device="cpu")
