"""Prompt scoring: the engine's prompt logprobs (what OpenAI's ``echo`` and lm-evaluation-harness's
loglikelihood tasks read) against transformers' own forward pass of the same checkpoint, through chunked
prefill, next to a cached prefix and beside generating requests; ``max_tokens`` 0."""

import pytest
import torch
from tiny_llama import write_tiny_model
from transformers import AutoModelForCausalLM

from kernelkit.serve import LLM, SamplingParams

PROMPTS = [[0, 5, 17, 33, 101, 250, 7, 7, 19, 64, 12, 3, 88, 140, 141, 142, 9, 10, 11, 201, 202, 5, 5, 5, 60, 61, 2],
           [0, 44, 45, 46]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reference(tiny):
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()

    def logprobs(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].log_softmax(-1)

    return logprobs


@pytest.mark.parametrize("chunk", [2048, 5])  # 5: the prompt is prefilled in chunks over several steps
def test_prompt_logprobs_match_transformers(tiny, reference, chunk):
    llm = LLM(str(tiny), device="cpu", max_num_batched_tokens=chunk)
    warm = llm.generate([PROMPTS[0][:20]], SamplingParams(temperature=0, max_tokens=1))  # fills the prefix cache
    assert warm[0].prompt_logprobs is None
    score = SamplingParams(max_tokens=0, prompt_logprobs=3)
    outs = llm.generate([PROMPTS[0], PROMPTS[1], PROMPTS[0]],
                        [score, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), score])
    for out in (outs[0], outs[2]):
        assert out.finished and out.finish_reason == "length" and out.token_ids == [] and out.text == ""
        ref = reference(PROMPTS[0])
        assert len(out.prompt_logprobs) == len(PROMPTS[0]) - 1
        for pos, (token, logprob, top) in enumerate(out.prompt_logprobs):
            assert token == PROMPTS[0][pos + 1]
            assert abs(logprob - ref[pos, token].item()) < 1e-4, pos
            values, ids = ref[pos].topk(3)
            assert [t for t, _ in top] == ids.tolist()
            assert max(abs(v - w) for (_, v), w in zip(top, values.tolist(), strict=True)) < 1e-4
    assert len(outs[1].token_ids) == 6 and outs[1].prompt_logprobs is None


def test_prompt_logprobs_with_generation(tiny, reference):
    llm = LLM(str(tiny), device="cpu")
    out = llm.generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=0,
                                                    prompt_logprobs=0))[0]
    ref = reference(PROMPTS[1])
    assert [t for t, _, _ in out.prompt_logprobs] == PROMPTS[1][1:]
    assert all(top == [] for _, _, top in out.prompt_logprobs)
    assert all(abs(lp - ref[i, t].item()) < 1e-4 for i, (t, lp, _) in enumerate(out.prompt_logprobs))
    assert len(out.token_ids) == 4 and len(out.logprobs) == 4


def test_fp8_block_requests_do_not_depend_on_their_batch(tiny, tmp_path):
    """A seeded request's tokens and logprobs alone and beside others: fp8-block activations are rounded
    to e4m3 per layer, which once turned the GEMM's batch-size-dependent fp32 rounding into 5e-4 nats here
    (0.1 and another text on SmolLM2)."""
    import shutil

    from kernelkit.convert import convert

    fp8 = convert(tiny, tmp_path / "fp8", progress=False)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special", "vocab", "merges", "chat")):
            shutil.copy(f, fp8 / f.name)
    llm = LLM(str(fp8), device="cpu")
    seeded = SamplingParams(temperature=0.8, seed=7, max_tokens=40, logprobs=0, ignore_eos=True)
    alone = llm.generate([[0, 5, 6, 7, 8]], seeded)[0]
    others = [list(range(10, 10 + n)) for n in (3, 17, 40)]
    beside = llm.generate([[0, 5, 6, 7, 8], *others],
                          [seeded] + [SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)] * 3)[0]
    assert alone.token_ids == beside.token_ids
    drift = max(abs(a[1] - b[1]) for a, b in zip(alone.logprobs, beside.logprobs, strict=True))
    assert drift < 1e-5, drift
