"""``kernelkit convert --scheme modelslim-w8a8-dynamic | modelslim-w4a8-dynamic`` writes what
msModelSlim's AscendV1 saver writes
(``quant_model_weights-*`` shards with their index, every tensor in ``quant_model_description.json`` with its
type, no ``quantization_config`` in config.json), and the engine and transformers (through ``kernelkit.eval``)
read it back: greedy tokens equal between the two, logits close to the float model on the dequantized weights;
a Qwen3-MoE converts with int8 or int4 experts (the FusedMoE methods) and a float router."""

import json

import pytest
import torch
from engine_checks import prefill_logits
from safetensors import safe_open
from safetensors.torch import save_file
from tiny_llama import write_tiny_model
from tiny_moe import write_tiny_moe

from kernelkit.convert import convert
from kernelkit.eval.load import load_causal_lm, read_state_dict
from kernelkit.layers import UnquantizedLinearMethod
from kernelkit.quant.modelslim.format import dequantize
from kernelkit.quant.modelslim.moe import W4A8DynamicMoEMethod, W8A8DynamicMoEMethod
from kernelkit.serve import LLM, SamplingParams

SCHEMES = {"modelslim-w8a8-dynamic": "W8A8_DYNAMIC", "modelslim-w4a8-dynamic": "W4A8_DYNAMIC"}
MODEL_TYPE = {"W8A8_DYNAMIC": "W8A8_DYNAMIC", "W4A8_DYNAMIC": "FLOAT"}  # msModelSlim hides W4A8 from the model type
PROMPTS = [[0, 5, 17, 33, 101], [0, 250, 7, 7, 9]]


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    src = write_tiny_model(root / "src")
    out = convert(src, root / "dst", request.param, max_shard_size=200_000, progress=False, device="cpu")
    return request.param, src, out


def test_the_checkpoint_is_laid_out_as_msmodelslim_writes_it(converted):
    scheme, src, out = converted
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and all(n.startswith("quant_model_weights-") for n in shards)
    index = json.loads((out / "quant_model_weights.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    description = json.loads((out / "quant_model_description.json").read_text())
    assert {k: description[k] for k in ("version", "model_quant_type", "group_size")} == {
        "version": "1.0.0", "model_quant_type": MODEL_TYPE[SCHEMES[scheme]], "group_size": 0}
    stored = {}
    for shard in shards:
        with safe_open(str(out / shard), framework="pt") as f:
            stored |= {name: f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118
    tensors = {k: v for k, v in description.items() if k not in ("version", "model_quant_type", "metadata",
                                                                  "group_size", "optional")}
    assert set(tensors) == set(stored) == set(index["weight_map"])
    q = "model.layers.0.self_attn.q_proj"
    assert tensors[f"{q}.weight"] == tensors[f"{q}.weight_scale"] == SCHEMES[scheme] and stored[f"{q}.weight"] == "I8"
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert tensors[name] == "FLOAT"
    if SCHEMES[scheme] == "W4A8_DYNAMIC":  # two int4 rows per byte; scale_bias [N, 1], row layers [N, 16]
        with safe_open(str(out / index["weight_map"][f"{q}.weight"]), framework="pt") as f:
            assert f.get_slice(f"{q}.weight").get_shape() == [96, 192]
        shapes = {}
        for name in (f"{q}.scale_bias", "model.layers.1.mlp.down_proj.scale_bias"):
            with safe_open(str(out / index["weight_map"][name]), framework="pt") as f:
                shapes[name] = f.get_slice(name).get_shape()
        assert list(shapes.values()) == [[192, 1], [192, 16]] and tensors[f"{q}.scale_bias"] == "W4A8_DYNAMIC"


def test_engine_and_transformers_read_it_alike(converted, tmp_path):
    _, src, out = converted
    llm = LLM(str(out), device="cpu")
    greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    engine_tokens = [o.token_ids for o in llm.generate(PROMPTS, greedy)]
    hf = load_causal_lm(out)
    with torch.no_grad():
        for prompt, tokens in zip(PROMPTS, engine_tokens, strict=True):
            ids = torch.tensor([prompt])
            hf_tokens = hf.generate(ids, max_new_tokens=24, do_sample=False, min_new_tokens=24)[0, len(prompt):]
            assert hf_tokens.tolist() == tokens

    # logits near the float model on the dequantized weights (int8 activations: close, not equal)
    _logits_near_the_dequantized_model(llm, out, tmp_path)


def _logits_near_the_dequantized_model(llm, out, tmp_path):
    from transformers import AutoModelForCausalLM

    state = read_state_dict(out)
    float_state = {}
    for name, t in state.items():
        module, _, suffix = name.rpartition(".")
        if suffix == "weight" and f"{module}.weight_scale" in state:
            float_state[name] = dequantize({k.rpartition(".")[2]: v for k, v in state.items()
                                            if k.rpartition(".")[0] == module})
        elif suffix in ("weight", "bias"):
            float_state[name] = t.float()
    (tmp_path / "config.json").write_text((out / "config.json").read_text())
    save_file(float_state, str(tmp_path / "model.safetensors"))
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = reference(torch.tensor([PROMPTS[0]])).logits[0]
    err = (prefill_logits(llm, PROMPTS[0]) - theirs).abs().max().item()
    assert 0 < err < 0.05 * theirs.abs().max().item()


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_qwen3_moe_gets_int_experts_and_a_float_router(tmp_path, scheme):
    kind = SCHEMES[scheme]
    write_tiny_moe(tmp_path / "src", "renormalized", {"moe_intermediate_size": 48, "intermediate_size": 80})
    out = convert(tmp_path / "src", tmp_path / "dst", scheme, progress=False, device="cpu")
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.0.mlp.gate.weight"] == "FLOAT"
    assert description["model.layers.2.mlp.experts.5.down_proj.weight_scale"] == kind
    assert description["model.layers.1.mlp.up_proj.weight"] == kind  # a dense layer (mlp_only_layers)
    llm = LLM(str(out), device="cpu")
    block = llm.engine.model.model.layers[0].mlp
    method = W4A8DynamicMoEMethod if kind == "W4A8_DYNAMIC" else W8A8DynamicMoEMethod
    assert type(block.experts.quant_method) is method
    assert isinstance(block.gate.quant_method, UnquantizedLinearMethod)
    rows = 48 if kind == "W4A8_DYNAMIC" else 96  # two int4 rows per byte
    assert block.experts.w13_weight.shape == (8, rows, 96) and block.experts.w13_weight_scale.shape == (8, 96, 1)
    (tmp_path / "reference").mkdir()
    _logits_near_the_dequantized_model(llm, out, tmp_path / "reference")
    dummy = LLM(str(out), device="cpu", load_format="dummy")  # random experts drawn and quantized per projection
    assert dummy.engine.model.model.layers[0].mlp.experts.w13_weight.any()
    out = dummy.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert len(out.token_ids) == 3
