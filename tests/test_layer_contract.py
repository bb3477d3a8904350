"""The layer contract from a scheme author's side: a scheme defined here, in the test (not in kernelkit), with
its own parameter names, a repack after loading and its own apply, registered through the entry-point group,
converted with ``kernelkit convert`` and served by the engine with merged q/k/v and gate/up layers; and the
unquantized FusedMoE against a per-expert loop."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from tiny_llama import write_tiny_model
from torch import nn

from kernelkit.cli import main
from kernelkit.layers import FusedMoE, LinearMethod, QKVParallelLinear, load_tensors, set_weight_attrs
from kernelkit.layers.base import partitioned_loader
from kernelkit.quant import QuantScheme, list_schemes

APPLIED: list[str] = []  # prefixes of the layers ToyInt4Method.apply ran for


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], [N, K] (K even) -> uint8 [N, K / 2], element 2j in the low nibble."""
    u = (q + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([(p & 15), (p >> 4)], dim=-1).flatten(-2).to(torch.int8) - 8


def toy_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 per output channel: (packed uint8 [N, K/2], channel_scale fp32 [N])."""
    scale = w.float().abs().amax(1).clamp(min=1e-8) / 7
    return pack_int4(torch.round(w.float() / scale[:, None]).clamp(-8, 7).to(torch.int8)), scale


@dataclass(frozen=True)
class ToyInt4Method(LinearMethod):
    """``packed`` [N, K/2] uint8 and ``channel_scale`` [N] in the checkpoint; after loading, unpacked and
    transposed into ``w_kn`` [K, N] (the repack a real scheme would do for its kernel's layout)."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        n = sum(output_partition_sizes)
        packed = nn.Parameter(torch.empty(n, input_size // 2, dtype=torch.uint8), requires_grad=False)
        scale = nn.Parameter(torch.empty(n, dtype=torch.float32), requires_grad=False)
        layer.register_parameter("packed", set_weight_attrs(packed, weight_loader=partitioned_loader(
            output_partition_sizes)))
        layer.register_parameter("channel_scale", set_weight_attrs(scale, weight_loader=partitioned_loader(
            output_partition_sizes)))

    def process_weights_after_loading(self, layer):
        layer.w_kn = unpack_int4(layer.packed.data).t().contiguous().float()
        del layer.packed  # only the repacked layout is kept

    def apply(self, layer, x, bias=None):
        APPLIED.append(layer.prefix)
        y = (x.float() @ layer.w_kn * layer.channel_scale).to(x.dtype)
        return y if bias is None else y + bias


class ToyInt4Scheme(QuantScheme):
    name = "toy-int4"
    quant_method = "toy-int4"

    @classmethod
    def from_config(cls, quantization_config):
        return cls(quantization_config.get("modules_to_not_convert"))

    def to_config(self):
        return {"quant_method": self.quant_method, "modules_to_not_convert": self.modules_to_not_convert}

    def convert_linear(self, prefix, weight, bias):
        packed, scale = toy_quantize(weight)
        return {"packed": packed, "channel_scale": scale}

    def linear_method(self, prefix):
        return ToyInt4Method() if self.quantizes(prefix) else None


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """ToyInt4Scheme in the entry-point group, as a pip-installed plugin would put it."""
    dist = tmp_path / "site" / "toy_int4-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-int4\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[kernelkit.quant]\ntoy-int4 = {__name__}:ToyInt4Scheme\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert "toy-int4" in [s.name for s in list_schemes()]


def test_a_scheme_from_outside_converts_and_serves_with_merged_layers(registered, tmp_path):
    from kernelkit.serve import LLM, SamplingParams

    src = write_tiny_model(tmp_path / "src")
    out = CliRunner().invoke(main, ["convert", str(src), str(tmp_path / "toy"), "--scheme", "toy-int4"])
    assert out.exit_code == 0, out.output
    state = load_file(str(tmp_path / "toy" / "model.safetensors"))
    assert state["model.layers.0.self_attn.k_proj.packed"].shape == (64, 96)

    # the reference: the same int4 values dequantized into a plain float checkpoint, run by transformers
    reference = tmp_path / "dequantized"
    reference.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (reference / f.name).write_bytes(f.read_bytes())
    plain = {}
    for name, t in state.items():
        if name.endswith(".packed"):
            base = name[: -len(".packed")]
            plain[f"{base}.weight"] = unpack_int4(t).float() * state[f"{base}.channel_scale"][:, None]
        elif not name.endswith(".channel_scale"):
            plain[name] = t
    save_file(plain, str(reference / "model.safetensors"))

    llm = LLM(str(tmp_path / "toy"), device="cpu")
    attn = llm.engine.model.model.layers[0].self_attn
    assert isinstance(attn.qkv_proj, QKVParallelLinear) and isinstance(attn.qkv_proj.quant_method, ToyInt4Method)
    assert hasattr(attn.qkv_proj, "w_kn") and not hasattr(attn.qkv_proj, "packed")
    prompts = [[0, 5, 17, 33, 101], [0, 250, 7]]
    APPLIED.clear()
    ours = [o.token_ids for o in llm.generate(prompts, SamplingParams(temperature=0, max_tokens=10,
                                                                      ignore_eos=True))]
    per_layer = {p: APPLIED.count(p) for p in set(APPLIED)}
    steps = per_layer["model.layers.0.self_attn.qkv_proj"]
    assert steps >= 10 and set(per_layer) == {f"model.layers.{i}.{m}" for i in range(2) for m in (
        "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")}
    assert set(per_layer.values()) == {steps}  # one apply per merged layer per step: one GEMM, not three or two

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32).eval()
    for prompt, tokens in zip(prompts, ours, strict=True):
        with torch.no_grad():
            expected = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, min_new_tokens=10)
        assert expected[0, len(prompt):].tolist() == tokens
    cfg = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "toy-int4"


def _expert_loop(x, gate, up, down, topk_weights, topk_ids):
    """Per token, per chosen expert: the SwiGLU MLP, weighted (the definition, written out)."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for w, e in zip(topk_weights[t].tolist(), topk_ids[t].tolist(), strict=True):
            h = torch.nn.functional.silu(gate[e] @ x[t]) * (up[e] @ x[t])
            out[t] += w * (down[e] @ h)
    return out


@pytest.mark.parametrize("tokens", [0, 1, 5, 37])
def test_fused_moe_matches_a_per_expert_loop(tokens, monkeypatch):
    from kernelkit.ops.moe import reference
    from kernelkit.ops.moe.reference import fused_moe_dense, select_experts

    e, k, h, i = 8, 2, 64, 32
    g = torch.Generator().manual_seed(tokens)
    gate, up, down = (torch.randn(e, i, h, generator=g) * 0.1, torch.randn(e, i, h, generator=g) * 0.1,
                      torch.randn(e, h, i, generator=g) * 0.1)
    layer = FusedMoE(e, k, h, i, renormalize=True, prefix="model.layers.0.mlp.experts", params_dtype=torch.float32)
    checkpoint = [(f"model.layers.0.mlp.experts.{j}.{name}_proj.weight", w[j], "test")
                  for j in range(e) for name, w in (("gate", gate), ("up", up), ("down", down))]
    load_tensors(nn.ModuleDict({"model": nn.ModuleDict({"layers": nn.ModuleList([nn.ModuleDict({"mlp": nn.ModuleDict(
        {"experts": layer})})])})}), checkpoint, FusedMoE.checkpoint_rules(e))
    x = torch.randn(tokens, h, generator=g)
    logits = torch.randn(tokens, e, generator=g)
    logits[:, 3] = -1e4  # expert 3 never chosen
    weights, ids = select_experts(logits, k, True)
    expected = _expert_loop(x, gate, up, down, weights, ids)
    torch.testing.assert_close(layer(x, logits), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(reference, "grouped_mm_supported", lambda x: False)  # the per-expert reference path too
    torch.testing.assert_close(layer(x, logits), expected, rtol=1e-5, atol=1e-5)
    dense = fused_moe_dense(x, layer.w13_weight, layer.w2_weight, weights, ids)  # the GPU's graph-safe path
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-5)
    if tokens:
        assert torch.allclose(weights.sum(-1), torch.ones(tokens)) and not (ids == 3).any()


def test_architecture_registry_names_what_it_does_not_know():
    from tiny_llama import CONFIG

    from kernelkit.serve.model import registry
    from kernelkit.serve.model.config import UnsupportedModel

    for name in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        model_class, cfg = registry.resolve({**CONFIG, "architectures": [name]})
        assert model_class.__name__ == "LlamaForCausalLM" and cfg.architecture == name
        assert cfg.qk_norm == (name == "Qwen3ForCausalLM") and cfg.attention_bias == (name == "Qwen2ForCausalLM")
    with pytest.raises(UnsupportedModel, match=r"unsupported architecture \['GPT2LMHeadModel'\]; supported: "
                                               r"\['LlamaForCausalLM', 'MistralForCausalLM'"):
        registry.resolve({**CONFIG, "architectures": ["GPT2LMHeadModel"]})
