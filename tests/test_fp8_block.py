"""The fp8-block scheme: weight format, runtime layer, quantization_config, quantize_."""

import pytest
import torch

from kernelkit.layers import QuantContext, ReplicatedLinear, load_tensors
from kernelkit.quant import get_scheme, quantize_
from kernelkit.quant.fp8_block.format import dequantize_weight, quantize_weight
from kernelkit.quant.fp8_block.linear import Fp8BlockLinearMethod
from kernelkit.quant.fp8_block.scheme import Fp8BlockScheme


@pytest.mark.parametrize("shape", [(256, 256), (576, 1536), (1536, 576), (49, 200)])
def test_weight_round_trip_within_fp8_rounding(shape):
    w = torch.randn(*shape, dtype=torch.float64) * 0.02
    q, s = quantize_weight(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == shape
    assert s.shape == (-(-shape[0] // 128), -(-shape[1] // 128)) and s.dtype == torch.float32
    err = (dequantize_weight(q, s).double() - w).abs()
    bound = s.double().repeat_interleave(128, 0)[: shape[0]].repeat_interleave(128, 1)[:, : shape[1]]
    # half an e4m3 ulp at |w / scale| <= 448 (16 scales), plus the fp32 rounding of w / scale
    assert (err <= bound * (16 + 448 * 2**-23)).all()


def _divide_reference(w: torch.Tensor, bn: int, bk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block by block, as sglang's convert_hf_to_fp8.py and DeepSeek-V3 write it: scale = amax / 448,
    q = cast(clamp(w / scale, -448, 448))."""
    n, k = w.shape
    q = torch.empty(n, k, dtype=torch.float8_e4m3fn)
    s = torch.empty(-(-n // bn), -(-k // bk))
    for i in range(0, n, bn):
        for j in range(0, k, bk):
            block = w[i:i + bn, j:j + bk].float()
            scale = block.abs().max().clamp(min=1e-10) / 448.0
            s[i // bn, j // bk] = scale
            q[i:i + bn, j:j + bk] = (block / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q, s


@pytest.mark.parametrize("shape, block", [((384, 640), (128, 128)), ((576, 192), (64, 64)), ((130, 257), (128, 128))])
def test_weights_are_bit_exact_with_the_dividing_reference(shape, block):
    """kernelkit once multiplied by 1 / scale; on rounding ties that lands one code away from the reference
    converters, which divide (SmolLM2: 45,463 of 106M bytes)."""
    w = (torch.randn(*shape) * 0.02).to(torch.bfloat16)
    q, s = quantize_weight(w, block)
    q_ref, s_ref = _divide_reference(w, *block)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


def test_fit_picks_the_largest_block_the_peers_load(kernelkit_logs):
    shapes = {"q_proj": (576, 576), "k_proj": (192, 576), "gate_proj": (1536, 576), "down_proj": (576, 1536)}
    fitted = Fp8BlockScheme().fit(shapes)
    assert fitted.block_size == (64, 64) and fitted.to_config()["weight_block_size"] == [64, 64]
    assert Fp8BlockScheme().fit({"o_proj": (4096, 4096), "down_proj": (4096, 14336)}).block_size == (128, 128)
    kept = Fp8BlockScheme(block_size=(128, 128)).fit(shapes)  # asked for explicitly: kept, with a warning
    assert kept.block_size == (128, 128)
    assert any("transformers refuses" in r.message and "q_proj" in r.message for r in kernelkit_logs.records)


def test_block_scale_is_block_amax_over_448():
    w = torch.zeros(130, 257)
    w[0, 0], w[129, 256], w[5, 200] = 3.0, -7.0, 0.5
    _, s = quantize_weight(w)
    expected = torch.full((2, 3), 1e-10 / 448)
    expected[0, 0], expected[1, 2], expected[0, 1] = 3 / 448, 7 / 448, 0.5 / 448
    torch.testing.assert_close(s, expected)


def test_ue8m0_scales_are_powers_of_two():
    _, s = quantize_weight(torch.randn(256, 384), scale_ue8m0=True)
    assert torch.equal(torch.log2(s), torch.round(torch.log2(s)))


def test_linear_matches_dequantized_reference_with_ragged_k():
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 200, bias=True)
    layer = quantize_(torch.nn.Sequential(linear), "fp8-block", block_size=(128, 128))[0]
    x = torch.randn(3, 5, 576)
    y = layer(x)
    assert y.shape == (3, 5, 200) and y.dtype == torch.float32
    w = dequantize_weight(layer.weight, layer.weight_scale_inv)
    from kernelkit.ops import per_token_group_quant_fp8

    xq, xs = per_token_group_quant_fp8(torch.nn.functional.pad(x.view(15, 576), (0, 64)), 128)
    x_deq = (xq.float().view(15, 5, 128) * xs.unsqueeze(-1)).view(15, 640)[:, :576]
    torch.testing.assert_close(y.view(15, 200), x_deq @ w.t() + linear.bias, rtol=1e-5, atol=1e-5)
    assert ((y - linear(x)).norm() / linear(x).norm()).item() < 0.05


def test_linear_state_dict_uses_checkpoint_names_and_compiles():
    layer = quantize_(torch.nn.Sequential(torch.nn.Linear(256, 128, bias=False)), "fp8-block")[0]
    assert set(layer.state_dict()) == {"weight", "weight_scale_inv"}
    empty = ReplicatedLinear(256, 128, quant=QuantContext(Fp8BlockScheme()), prefix="proj")
    load_tensors(empty, [(k, v, "test") for k, v in layer.state_dict().items()])
    x = torch.randn(4, 256)
    torch.testing.assert_close(torch.compile(empty, fullgraph=True, backend="aot_eager")(x), layer(x))


def test_config_round_trip_and_errors():
    scheme = get_scheme("fp8-block")(block_size=(128, 128), scale_ue8m0=True)
    cfg = scheme.to_config()
    assert cfg == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                   "weight_block_size": [128, 128], "modules_to_not_convert": ["lm_head", "embed_tokens"],
                   "scale_fmt": "ue8m0"}
    again = Fp8BlockScheme.from_config(cfg)
    assert again.block_size == (128, 128) and again.scale_ue8m0
    with pytest.raises(ValueError, match="static activation scales"):
        Fp8BlockScheme.from_config(cfg | {"activation_scheme": "static"})
    with pytest.raises(ValueError, match="weight_block_size"):
        Fp8BlockScheme.from_config({"quant_method": "fp8", "activation_scheme": "dynamic"})
    for bad in [(128,), (0, 0), (-1, -1), "128"]:
        with pytest.raises(ValueError, match="two positive integers"):
            Fp8BlockScheme(block_size=bad)


def test_quantize_swaps_linears_but_not_excluded_modules():
    model = torch.nn.ModuleDict({
        "embed_tokens": torch.nn.Embedding(10, 256),
        "layers": torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64)),
        "lm_head": torch.nn.Linear(64, 10),
    })
    quantize_(model, "fp8-block")
    fp8 = lambda m: isinstance(getattr(m, "quant_method", None), Fp8BlockLinearMethod)  # noqa: E731
    assert fp8(model["layers"][0]) and fp8(model["layers"][2])
    assert type(model["lm_head"]) is torch.nn.Linear and type(model["embed_tokens"]) is torch.nn.Embedding
    quantize_(model, "fp8-block", modules_to_not_convert=[])
    assert fp8(model["lm_head"])
    with pytest.raises(TypeError, match="constructor"):
        quantize_(model, Fp8BlockScheme(), block_size=(64, 64))


def test_chunked_quantization_matches_one_pass(monkeypatch):
    from kernelkit.quant.fp8_block import format as fmt

    w = torch.randn(700, 300)
    q, s = quantize_weight(w, (128, 128))
    monkeypatch.setattr(fmt, "ROWS_PER_CHUNK", 128)
    q2, s2 = quantize_weight(w, (128, 128))
    assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8)) and torch.equal(s, s2)
