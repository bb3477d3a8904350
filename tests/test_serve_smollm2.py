"""The serving engine on the real model, SmolLM2-135M-Instruct, against transformers (CPU, fp32)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from kernelkit.eval.load import load_causal_lm
from kernelkit.quant.fp8_block.format import dequantize_weight
from kernelkit.quant.fp8_block.linear import Fp8BlockLinearMethod
from kernelkit.serve import LLM, SamplingParams
from kernelkit.serve.scheduler import ScheduledBatch

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "In 1492, Columbus sailed",
           "Water boils at a temperature of", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
           "A list of prime numbers: 2, 3, 5,"]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


@pytest.fixture(scope="module")
def fp32_llm(smollm2):
    return LLM(smollm2("fp32"), max_num_batched_tokens=4096)


def _transformers_greedy(model, ids: list[int], n: int) -> list[int]:
    """n argmax steps with transformers' KV cache and no logits processors (EOS neither stops nor is masked)."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        tokens = [int(out.logits[0, -1].argmax())]
        for _ in range(n - 1):
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
            tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


def test_greedy_tokens_and_prefill_logits_match_transformers(smollm2, fp32_llm):
    reference = AutoModelForCausalLM.from_pretrained(smollm2("fp32"), dtype=torch.float32).eval()
    engine = fp32_llm.engine
    for prompt in PROMPTS:
        ids = engine.tokenizer.encode(prompt)
        out = fp32_llm.generate([ids], GREEDY)[0]
        assert out.token_ids == _transformers_greedy(reference, ids, 32), prompt
    ids = engine.tokenizer.encode(PROMPTS[0])
    engine.add_request("logits", ids, GREEDY)
    batch = engine.scheduler.schedule()
    assert batch.num_new_tokens == [len(ids)]
    input_ids, positions, meta, _ = engine.runner.prepare(batch)
    with torch.no_grad():
        hidden = engine.model(input_ids, positions, engine.runner.kv_caches, meta, engine.runner.backend)
        ours = engine.model.compute_logits(hidden)
        theirs = reference(torch.tensor([ids])).logits[0]
    assert (ours - theirs).abs().max().item() < 1e-3
    engine.abort("logits")


def test_same_tokens_across_batch_compositions(smollm2, fp32_llm):
    alone = [fp32_llm.generate([p], GREEDY)[0].token_ids for p in PROMPTS]
    assert [o.token_ids for o in fp32_llm.generate(PROMPTS, GREEDY)] == alone
    chunked = LLM(smollm2("fp32"), max_num_batched_tokens=8, block_size=4)
    assert [o.token_ids for o in chunked.generate(PROMPTS, GREEDY)] == alone  # chunked prefill
    cached = chunked.generate(PROMPTS[::-1], GREEDY)  # every prompt's prefix blocks are in the cache now
    assert [o.token_ids for o in cached][::-1] == alone
    assert chunked.engine.blocks.num_free == chunked.engine.blocks.num_blocks


def test_chat_answer(fp32_llm):
    out = fp32_llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                        SamplingParams(temperature=0, max_tokens=20))
    assert out.text == "The capital of France is Paris." and out.finish_reason == "stop"


def test_fp8_block_serves_coherent_text_close_to_a_dequantized_reference(smollm2):
    """The engine's fp8-block model (W8A8: FP8 weights and per-token-group FP8 activations) against
    transformers' modeling code with the FP8 weights dequantized (W8A16), teacher-forced on the engine's own
    greedy tokens. Exact token equality is not a sound expectation here: a 1e-7 difference in any unquantized op
    can move an activation across an FP8 rounding boundary (one e4m3 step is 6-12% of the value), which flips
    argmax near-ties. Measured: 94-100% of positions agree per prompt, every disagreement a near-tie (largest
    margin 0.91 logits). We assert >= 90% agreement overall and every choice within 1.5 logits of the best."""
    llm = LLM(smollm2("fp8"))
    answer = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                      SamplingParams(temperature=0, max_tokens=20))
    assert "Paris" in answer.text
    reference = load_causal_lm(smollm2("fp8"))
    for parent in list(reference.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(getattr(child, "quant_method", None), Fp8BlockLinearMethod):
                linear = torch.nn.Linear(child.in_features, child.out_features, bias=False)
                linear.weight.data = dequantize_weight(child.weight, child.weight_scale_inv)
                setattr(parent, name, linear)
    agree, total = 0, 0
    prompt_ids = [llm.engine.tokenizer.encode(prompt) for prompt in PROMPTS[:5]]
    outputs = llm.generate(prompt_ids, GREEDY)  # one batch: the reference below is teacher-forced on its tokens
    for prompt, ids, out in zip(PROMPTS[:5], prompt_ids, outputs, strict=True):
        tokens = torch.tensor(out.token_ids)
        with torch.no_grad():
            logits = reference(torch.tensor([ids + tokens.tolist()])).logits[0, len(ids) - 1:-1]
        margin = logits.max(-1).values - logits.gather(-1, tokens[:, None]).squeeze(-1)
        assert margin.max().item() < 1.5, prompt
        agree += (logits.argmax(-1) == tokens).sum().item()
        total += len(tokens)
    assert agree / total >= 0.9


def test_scheduled_batch_helper():
    assert ScheduledBatch([], []).num_tokens == 0


def test_incremental_detokenizer_on_the_real_tokenizer(fp32_llm):
    """Byte-level BPE with multi-byte characters split across tokens (CJK, emoji, accents) and leading spaces:
    the streamed pieces join to exactly the full decode of the generated ids."""
    from kernelkit.serve.detokenizer import IncrementalDetokenizer

    tok = fp32_llm.engine.tokenizer
    ids = tok.encode("User: héllo wörld, 日本語のテキスト 🎉🎉 naïve café!\n  indented\tcode() -> ok")
    for cut in range(1, 12):
        detok = IncrementalDetokenizer(tok, ids[:cut], stop=[])
        pieces = [detok.add(t)[0] for t in ids[cut:]]
        # a cut inside a character: the prompt's tokens after its last clean boundary come out with the output
        clean = max(j for j in range(cut + 1) if not tok.decode(ids[:j]).endswith("\ufffd"))
        assert "".join(pieces) == tok.decode(ids)[len(tok.decode(ids[:clean])):], cut
    with pytest.raises(ValueError, match="slow tokenizer"):
        IncrementalDetokenizer(type("SlowTokenizer", (), {"is_fast": False})(), ids, stop=[])
