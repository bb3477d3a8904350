"""AWQ W4A16 through the layer contract (CPU): ``kernelkit convert --scheme w4a16-rtn`` in both checkpoint
layouts, served by the engine (merged q/k/v and gate/up) and loaded by ``kernelkit eval``'s reader, each
against transformers running the same 4-bit values dequantized; group-size fallback; bad checkpoints."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from tiny_llama import write_tiny_model

from kernelkit.cli import main
from kernelkit.layers import CheckpointMismatch
from kernelkit.quant.awq.format import dequantize, unpack_autoawq, unpack_compressed_tensors

PROMPTS = [[0, 5, 17, 33, 101], [0, 250, 7, 8, 9, 10, 11]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def _convert(src, dst, *args):
    out = CliRunner().invoke(main, ["convert", str(src), str(dst), "--scheme", "w4a16-rtn", *args])
    assert out.exit_code == 0, out.output
    return dst


def _dequantized_copy(src, quantized, dst, layout):
    """A float checkpoint with the quantized model's 4-bit values dequantized: the reference."""
    shutil.copytree(src, dst)
    state, plain = load_file(str(quantized / "model.safetensors")), {}
    group = json.loads((quantized / "config.json").read_text())["quantization_config"]
    group = group.get("group_size") or group["config_groups"]["group_0"]["weights"]["group_size"]
    for name, t in state.items():
        base = name.rsplit(".", 1)[0]
        if layout == "autoawq" and name.endswith(".qweight"):
            q, s, z = unpack_autoawq(t, state[f"{base}.qzeros"], state[f"{base}.scales"])
        elif layout == "ct" and name.endswith(".weight_packed"):
            q, s, z = unpack_compressed_tensors(t, state[f"{base}.weight_scale"], state[f"{base}.weight_zero_point"],
                                                state[f"{base}.weight_shape"])
        elif name.rsplit(".", 1)[1] in ("weight", "bias"):
            plain[name] = t
            continue
        else:
            continue
        plain[f"{base}.weight"] = dequantize(q, s, z, group)
    save_file(plain, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("layout, args", [("autoawq", []), ("ct", ["--format", "compressed-tensors"]),
                                          ("autoawq", ["--group-size", "32"])])
def test_w4a16_checkpoint_serves_like_its_dequantized_reference(tiny, tmp_path, layout, args):
    from transformers import AutoModelForCausalLM

    from kernelkit.eval.load import load_causal_lm
    from kernelkit.serve import LLM, SamplingParams

    out = _convert(tiny, tmp_path / "q", *args)
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    group = 32 if "32" in args else 64  # 128 does not divide K = 192
    if layout == "autoawq":
        assert cfg == {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm",
                       "modules_to_not_convert": ["lm_head", "embed_tokens"]}
    else:
        assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
        assert cfg["config_groups"]["group_0"]["weights"]["group_size"] == 64
    reference = AutoModelForCausalLM.from_pretrained(_dequantized_copy(tiny, out, tmp_path / "ref", layout),
                                                     dtype=torch.float32).eval()
    llm = LLM(str(out), device="cpu")
    qkv = llm.engine.model.model.layers[0].self_attn.qkv_proj
    if group == 64:  # merged, in the tensor-core layout after loading: 16-row tiles x 64-k chunks x 32 lanes x 4
        assert qkv.w4_layout == "mma" and qkv.qweight.shape == ((192 + 64 + 64) // 16, 192 // 64, 32, 4)
    else:  # groups of 32 do not fit it: AutoAWQ's layout
        assert qkv.w4_layout == "autoawq" and qkv.qweight.shape == (192, (192 + 64 + 64) // 8)
    ours = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    for prompt, got in zip(PROMPTS, ours, strict=True):
        with torch.no_grad():
            expected = reference.generate(torch.tensor([prompt]), max_new_tokens=10, min_new_tokens=10,
                                          do_sample=False)
        assert expected[0, len(prompt):].tolist() == got.token_ids
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        a, b = load_causal_lm(out)(ids).logits, reference(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_explicit_group_size_that_does_not_divide_k_is_an_error(tiny, tmp_path):
    out = CliRunner().invoke(main, ["convert", str(tiny), str(tmp_path / "q"), "--scheme", "w4a16-rtn",
                                    "--group-size", "128"])
    assert out.exit_code == 1 and "group size 128" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("damage, match", [
    ("drop qzeros", r"missing tensors \['model.layers.0.mlp.down_proj.qzeros'\]"),
    ("wrong packing", r"model.layers.0.mlp.down_proj.qweight does not fit"),
    ("float qweight", r"qweight is torch.float32, the model's"),
])
def test_bad_checkpoints_name_the_tensor(tiny, tmp_path, damage, match):
    from kernelkit.serve import LLM

    out = _convert(tiny, tmp_path / "q")
    path = out / "model.safetensors"
    state = load_file(str(path))
    name = "model.layers.0.mlp.down_proj"
    if damage == "drop qzeros":
        del state[f"{name}.qzeros"]
    elif damage == "wrong packing":
        state[f"{name}.qweight"] = state[f"{name}.qweight"].reshape(-1, 8).contiguous()  # N and K swapped in packing
    else:
        state[f"{name}.qweight"] = state[f"{name}.qweight"].float()
    save_file(state, str(path))
    with pytest.raises(CheckpointMismatch, match=match):
        LLM(str(out), device="cpu")


def test_awq_calibration_converts_and_serves_like_its_dequantized_reference(tiny, tmp_path):
    """Scales searched per layer on calibration text fold into the norms (so the checkpoint's norms change)
    and the linears; the result serves like transformers on the same values dequantized."""
    from transformers import AutoModelForCausalLM

    from kernelkit.serve import LLM, SamplingParams

    out = CliRunner().invoke(main, ["convert", str(tiny), str(tmp_path / "awq"), "--scheme", "awq",
                                    "--calib-samples", "2", "--calib-seqlen", "32"])
    assert out.exit_code == 0, out.output
    out = tmp_path / "awq"
    state, source = load_file(str(out / "model.safetensors")), load_file(str(tiny / "model.safetensors"))
    norm = "model.layers.1.input_layernorm.weight"
    assert not torch.equal(state[norm].float(), source[norm].float())  # the q/k/v scales went into it
    assert not (out / ".calibration").exists() and not list(out.glob("layer-*"))
    reference = AutoModelForCausalLM.from_pretrained(_dequantized_copy(tiny, out, tmp_path / "ref", "autoawq"),
                                                     dtype=torch.float32).eval()
    got = LLM(str(out), device="cpu").generate(PROMPTS, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    for prompt, result in zip(PROMPTS, got, strict=True):
        with torch.no_grad():
            expected = reference.generate(torch.tensor([prompt]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert expected[0, len(prompt):].tolist() == result.token_ids


def test_calibration_text_is_disjoint_from_the_perplexity_text(tiny, tmp_path):
    from kernelkit.convert.calibration import calibration_text
    from kernelkit.eval.ppl import default_text

    calib, full = calibration_text(), default_text()
    assert full.index(calib[:500]) > 200_000 > 130_000  # eval ppl reads at most the first ~130 kB
    out = CliRunner().invoke(main, ["convert", str(tiny), str(tmp_path / "awq"), "--scheme", "awq",
                                    "--calib-samples", "100000"])
    assert out.exit_code == 1 and "fewer than --calib-samples 100000" in out.output
    assert not (tmp_path / ".awq.partial").exists()


def test_quantize_in_place_with_w4a16_rtn():
    from kernelkit.quant import quantize_

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32, bias=False))
    x = torch.randn(5, 128)
    expected = model(x)
    quantize_(model, "w4a16-rtn", group_size=32)
    assert type(model[0].quant_method).__name__ == "AwqLinearMethod" and model[0].qweight.dtype == torch.int32
    with torch.no_grad():
        got = model(x)
    assert ((got - expected).norm() / expected.norm()).item() < 0.1


def _autoawq_best_clip(w, x, group_size, n_grid=20, max_shrink=0.5, n_sample_token=512):
    """AutoAWQ's ``AwqQuantizer._compute_best_clip`` (awq/quantize/quantizer.py), transcribed: broadcast
    products per output-channel batch, its own pseudo-quantization (asymmetric, zero point)."""
    from kernelkit.quant.awq.format import fake_quantize

    x = x.view(-1, x.shape[-1]).reshape(1, x.shape[0], -1, group_size)
    x = x[:, 0::max(1, x.shape[1] // n_sample_token)]
    w = w.reshape(w.shape[0], 1, -1, group_size)
    best_all = []
    for i_b in range(0, w.shape[0], 64):
        wb = w[i_b:i_b + 64]
        org_max = wb.abs().amax(dim=-1, keepdim=True)
        best_max, min_errs = org_max.clone(), torch.ones_like(org_max) * 1e9
        org_out = (x * wb).sum(dim=-1)
        for i_s in range(int(max_shrink * n_grid)):
            max_val = org_max * (1 - i_s / n_grid)
            q_w = fake_quantize(torch.clamp(wb, -max_val, max_val).reshape(-1, w.shape[-2] * group_size),
                                group_size).reshape(wb.shape)
            err = ((x * q_w).sum(dim=-1) - org_out).pow(2).mean(dim=1).view(min_errs.shape)
            better = err < min_errs
            min_errs[better], best_max[better] = err[better], max_val[better]
        best_all.append(best_max)
    return torch.cat(best_all).squeeze(1).squeeze(-1)


def test_clip_search_chooses_autoawqs_bounds():
    from kernelkit.quant.awq.search import search_clip

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 192, generator=g) * torch.rand(192, generator=g) * 3
    w = torch.randn(136, 192, generator=g) * 0.05
    w[::7, 5] = 0.6  # outliers worth clipping around
    ours, theirs = search_clip(x, w, 64), _autoawq_best_clip(w, x, 64)
    assert ours.shape == (136, 3)
    assert (ours == theirs).float().mean() > 0.99  # equal but for near-ties between two candidates
    torch.testing.assert_close(ours, theirs, rtol=0.06, atol=0)  # one grid step (1/20) apart at most
    assert (ours < w.abs().reshape(136, 3, 64).amax(-1)).any()  # some groups are clipped
