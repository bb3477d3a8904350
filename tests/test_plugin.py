"""The example plugin (examples/plugin-int8-channel) installed with pip: it registers through the entry-point
group, `kernelkit info` lists it, and it converts and runs a model like a built-in scheme: in transformers'
modeling code (kernelkit eval's loader), in the engine with merged q/k/v and gate/up layers, and through
quantize_."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_llama import write_tiny_model

from kernelkit.cli import main
from kernelkit.convert import convert
from kernelkit.eval.load import load_causal_lm, read_state_dict
from kernelkit.quant import get_scheme, list_schemes, quantize_

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin-int8-channel"


@pytest.fixture(scope="module")
def installed_plugin():
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(PLUGIN)], check=True)
    yield
    subprocess.run([*pip, "uninstall", "-y", "kk-int8-channel"], check=True)


def test_plugin_registers_converts_and_runs(installed_plugin, tmp_path):
    scheme_cls = get_scheme("int8-channel")
    assert {s.name: s.packages for s in list_schemes()}["int8-channel"].endswith("(package kk-int8-channel)")
    info = CliRunner().invoke(main, ["info"], env={"COLUMNS": "200"})
    assert "int8-channel" in info.output and "kk-int8-channel" in info.output

    write_tiny_model(tmp_path / "src")
    out = convert(tmp_path / "src", tmp_path / "dst", "int8-channel", progress=False)
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "kk-int8-channel"

    state = read_state_dict(out)
    assert state["model.layers.0.mlp.up_proj.weight"].dtype == torch.int8
    assert state["model.layers.0.mlp.up_proj.weight_scale"].shape == (320, 1)
    ids = torch.randint(0, 300, (1, 12))
    hf = load_causal_lm(out)
    with torch.no_grad():
        expected, got = load_causal_lm(tmp_path / "src")(ids).logits, hf(ids).logits
    assert ((got - expected).norm() / expected.norm()).item() < 0.05

    from kernelkit.serve import LLM, SamplingParams

    llm = LLM(str(out), device="cpu")
    qkv = llm.engine.model.model.layers[0].self_attn.qkv_proj
    assert type(qkv.quant_method).__name__ == "Int8ChannelLinearMethod" and qkv.weight.dtype == torch.int8
    prompt = ids[0].tolist()
    tokens = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0].token_ids
    with torch.no_grad():
        greedy = hf.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert tokens == greedy  # the engine's merged layers and eval's per-module ones read the same checkpoint

    linear = torch.nn.Linear(64, 32)
    model = torch.nn.Sequential(linear)
    x = torch.randn(3, 64)
    expected = linear(x)
    quantize_(model, "int8-channel")
    assert type(model[0].quant_method).__name__ == "Int8ChannelLinearMethod" and model[0].weight.dtype == torch.int8
    assert ((model(x) - expected).norm() / expected.norm()).item() < 0.02
    assert scheme_cls.from_config(cfg).modules_to_not_convert == ["lm_head", "embed_tokens"]
