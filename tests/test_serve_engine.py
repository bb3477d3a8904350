"""The serving engine on a tiny random llama (CPU): block manager, scheduler, sampler, detokenizer, and the
engine's invariants (batch-composition independence, chunked prefill, prefix caching, preemption, aborts).
Engines here run on the CPU even where a GPU is present (KV budgets, block sizes and dtypes are CPU ones);
tests/test_serve_gpu.py covers the GPU engine."""

import functools
import random

import pytest
import torch
from click.testing import CliRunner
from tiny_llama import write_tiny_model

from kernelkit.cli import main
from kernelkit.serve import LLM, RequestError, SamplingParams
from kernelkit.serve.block_manager import BlockManager
from kernelkit.serve.detokenizer import IncrementalDetokenizer
from kernelkit.serve.sampling import sample
from kernelkit.serve.sequence import Sequence

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
CpuLLM = functools.partial(LLM, device="cpu")
# the Triton attention backend on CPU tensors needs Triton's interpreter, which tests/conftest.py turns on only
# without a GPU
needs_interpreter = pytest.mark.skipif(torch.cuda.is_available(), reason="Triton's interpreter runs without a GPU "
                                       "only; tests/test_serve_gpu.py covers the Triton backend on the GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def _seq(tokens, rid="r"):
    return Sequence(rid, list(tokens), GREEDY, torch.Generator())


def test_block_manager_prefix_hits_need_equal_tokens_and_computed_blocks():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = _seq(range(10), "a")
    bm.allocate(a)
    assert len(a.block_table) == 3 and a.num_computed_tokens == 0 and bm.num_free == 5
    b = _seq(range(10), "b")
    bm.allocate(b)  # a's blocks are not computed yet: no sharing
    assert b.num_computed_tokens == 0 and set(a.block_table).isdisjoint(b.block_table)
    bm.release(b)
    a.num_computed_tokens = 10
    bm.mark_computed(a)
    c = _seq(list(range(8)) + [99, 98], "c")
    bm.allocate(c)
    assert c.block_table[:2] == a.block_table[:2] and c.num_computed_tokens == 8
    d = _seq(list(range(4)) + [7, 7, 7, 7, 1], "d")
    bm.allocate(d)  # first block shared, second differs
    assert d.block_table[0] == a.block_table[0] and d.block_table[1] != a.block_table[1] and d.num_computed_tokens == 4
    for s in (a, c, d):
        bm.release(s)
    assert bm.num_free == 8
    e = _seq(range(10), "e")  # a's freed blocks still hold its prefix
    bm.allocate(e)
    assert e.num_computed_tokens == 8


def test_block_manager_never_skips_the_last_token():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = _seq(range(8))
    bm.allocate(a)
    a.num_computed_tokens = 8
    bm.mark_computed(a)
    b = _seq(range(8), "b")
    bm.allocate(b)
    assert b.num_computed_tokens == 4  # the block holding the last prompt token is recomputed for its logits


def test_sampler_filters_and_seeds():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4))
    params = [SamplingParams(temperature=0), SamplingParams(top_k=1), SamplingParams(top_p=0.5),
              SamplingParams(min_p=0.4)]
    for _ in range(20):
        tokens = sample(logits, params, [torch.Generator() for _ in params]).tokens
        assert tokens[0] == 0 and tokens[1] == 0 and tokens[2] == 0 and tokens[3] in (0, 1)
    a = [sample(torch.zeros(1, 50), [SamplingParams(seed=3)], [g]).tokens[0]
         for g in [torch.Generator().manual_seed(3)] for _ in range(5)]
    g = torch.Generator().manual_seed(3)
    b = [sample(torch.zeros(3, 50), [SamplingParams(seed=3)] * 3, [g, torch.Generator(), torch.Generator()]).tokens[0]
         for _ in range(5)]
    assert a == b  # the same seeded draws whatever else is in the batch


def test_unfiltered_rows_do_not_depend_on_filtering_neighbours():
    from kernelkit.serve.sampling import _filtered_probs

    logits = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0)) * 4
    plain = [SamplingParams(temperature=0.7)] * 6
    mixed = plain[:5] + [SamplingParams(temperature=0.7, top_p=0.8, top_k=50)]
    alone, beside = _filtered_probs(logits, plain), _filtered_probs(logits, mixed)
    assert torch.equal(alone[:5], beside[:5])  # bit for bit: the same seeded draw either way
    assert (alone > 0).all()  # top_p = 1 keeps the tail, even where the cumulative sum rounds past 1
    assert 0 < (beside[5] > 0).sum() <= 50


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_tokens=-1),
                                 dict(min_p=2), dict(logprobs=50), dict(top_k=-2), dict(top_k=2**63),
                                 dict(seed=2**64), dict(seed=-2**63 - 1), dict(stop_token_ids=[2**63]),
                                 dict(temperature=float("nan")), dict(top_p=float("inf")), dict(prompt_logprobs=21),
                                 dict(max_tokens=2**31)])
def test_sampling_params_validation(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_incremental_detokenizer_matches_full_decode_and_stops(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    ids = tok.encode("the quick brown fox jumps over the lazy dog, hello world")
    detok = IncrementalDetokenizer(tok, ids[:2], stop=[])
    text = "".join(detok.add(t)[0] for t in ids[2:])
    assert text == tok.decode(ids[2:]) and detok.text == text
    detok = IncrementalDetokenizer(tok, ids[:2], stop=["lazy"])
    for t in ids[2:]:
        _, hit = detok.add(t)
        if hit:
            break
    assert hit and detok.text == tok.decode(ids[2:]).split("lazy")[0]


def test_batch_composition_chunked_prefill_and_prefix_cache_give_identical_tokens(tiny):
    g = random.Random(0)
    prompts = [[g.randrange(2, 290) for _ in range(n)] for n in (37, 5, 64, 21)]
    alone = [CpuLLM(tiny).generate([p], GREEDY)[0].token_ids for p in prompts]
    batched = [o.token_ids for o in CpuLLM(tiny).generate(prompts, GREEDY)]
    chunked_llm = CpuLLM(tiny, max_num_batched_tokens=16, block_size=8)
    chunked = [o.token_ids for o in chunked_llm.generate(prompts, GREEDY)]
    again = [o.token_ids for o in chunked_llm.generate(prompts, GREEDY)]  # prefixes now cached
    assert alone == batched == chunked == again
    assert chunked_llm.engine.blocks.num_free == chunked_llm.engine.blocks.num_blocks


def test_mixed_requests_with_aborts_and_preemptions_free_every_block(tiny):
    llm = CpuLLM(tiny, kv_cache_memory=60 * 2 * 2 * 8 * 64 * 4, block_size=8, max_num_seqs=32,
              max_num_batched_tokens=96)
    engine = llm.engine
    assert engine.blocks.num_blocks == 60
    g = random.Random(1)
    live, finished = set(), 0
    for i in range(200):
        params = SamplingParams(temperature=g.choice([0, 0.8]), top_p=g.choice([1.0, 0.9]), max_tokens=g.randint(1, 40),
                                seed=g.choice([None, i]), ignore_eos=True)
        engine.add_request(f"r{i}", [g.randrange(2, 290) for _ in range(g.randint(1, 60))], params)
        live.add(f"r{i}")
        if g.random() < 0.15:
            victim = g.choice(sorted(live))
            engine.abort(victim)
            live.discard(victim)
        for out in engine.step():
            if out.finished:
                finished += 1
                live.discard(out.request_id)
    while engine.has_unfinished():
        for out in engine.step():
            finished += out.finished
    assert engine.scheduler.num_preemptions > 0
    assert engine.blocks.num_free == engine.blocks.num_blocks and not engine.requests


def test_request_errors(tiny):
    llm = CpuLLM(tiny, max_model_len=64)
    with pytest.raises(RequestError, match="exceeds the maximum context length 64"):
        llm.generate([[5] * 60], SamplingParams(max_tokens=10))
    with pytest.raises(RequestError, match="empty"):
        llm.generate([[]], GREEDY)
    assert not llm.engine.has_unfinished() and llm.engine.blocks.num_free == llm.engine.blocks.num_blocks


def test_a_kv_budget_below_one_block_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="no room for a KV cache: kv_cache_memory=100 bytes"):
        CpuLLM(tiny, kv_cache_memory=100)
    out = CliRunner().invoke(main, ["generate", "--model", str(tiny), "--device", "cpu", "--kv-cache-memory", "100",
                                    "hi"])
    assert out.exit_code == 1 and "Error: no room for a KV cache" in out.output and "Traceback" not in out.output


def test_stop_conditions_and_logprobs(tiny):
    llm = CpuLLM(tiny)
    first = llm.generate([[5, 6, 7]], GREEDY)[0].token_ids
    out = llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[first[3]],
                                                   ignore_eos=True, logprobs=2))[0]
    assert out.finish_reason == "stop" and out.token_ids == first[:4]
    assert len(out.logprobs) == 4 and all(len(top) == 2 for _, _, top in out.logprobs)
    assert all(lp <= 0 for _, lp, _ in out.logprobs)
    assert llm.generate([[5, 6, 7]], GREEDY)[0].finish_reason == "length"


def test_dummy_weights_need_only_config_and_tokenizer(tmp_path):
    import json

    from tiny_llama import CONFIG, write_tiny_tokenizer

    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "eos_token_id": 1, "quantization_config": {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}))
    write_tiny_tokenizer(tmp_path)
    llm = CpuLLM(tmp_path, load_format="dummy")
    assert type(llm.engine.model.model.layers[0].mlp.down_proj.quant_method).__name__ == "Fp8BlockLinearMethod"
    assert len(llm.generate([[3, 4, 5]], GREEDY)[0].token_ids) == 12


@needs_interpreter
def test_triton_attention_backend_gives_the_same_tokens(tiny):
    """The GPU attention kernel inside the engine (Triton's interpreter without a GPU), chunked prefill and
    prefix hits included."""
    prompts = [[(7 * i + j) % 280 + 2 for j in range(n)] for i, n in enumerate((40, 3, 17))]
    options = dict(block_size=16, max_num_batched_tokens=24)
    torch_llm = CpuLLM(tiny, attention_backend="torch", **options)
    torch_tokens = [o.token_ids for o in torch_llm.generate(prompts, GREEDY)]
    triton_llm = CpuLLM(tiny, attention_backend="triton", **options)
    assert [o.token_ids for o in triton_llm.generate(prompts, GREEDY)] == torch_tokens
    assert [o.token_ids for o in triton_llm.generate(prompts, GREEDY)] == torch_tokens  # prefix-cache hits


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_interpreter)])
def test_decode_through_padded_graph_buffers_gives_the_same_tokens(tiny, backend):
    """The CUDA-graph decode path without the capture (DecodeGraphs replays eagerly here): static buffers, batches
    padded up the size ladder into the scratch block, larger batches falling back to eager steps. Tokens must equal
    the plain engine's, sampled ones included."""
    from kernelkit.serve.runner import ModelRunner

    g = random.Random(2)
    prompts = [[g.randrange(2, 290) for _ in range(n)] for n in (9, 30, 3, 17, 12, 5, 24, 2, 40, 7, 11)]
    params = [SamplingParams(temperature=0, max_tokens=6 + i, ignore_eos=True) if i % 3 else
              SamplingParams(temperature=0.9, top_k=20, max_tokens=6 + i, seed=i, ignore_eos=True)
              for i in range(len(prompts))]
    small = dict(max_num_batched_tokens=64, kv_cache_memory=24 * 2 * 2 * 16 * 64 * 4)  # 24 blocks: all get reused
    expected = [o.token_ids for o in CpuLLM(tiny, **small).generate(prompts, params)]
    llm = CpuLLM(tiny, attention_backend=backend, **small)
    e = llm.engine
    assert e.blocks.num_blocks == 24
    e.runner = ModelRunner(e.model, e.blocks.num_blocks, e.config.block_size, torch.float32, e.device,
                           e.runner.backend, [1, 2, 4, 8], e.max_model_len)
    graphs, sizes = e.runner.graphs, []
    replay = graphs.run
    scratch = set(range(graphs.scratch_slot, graphs.scratch_slot + e.config.block_size))

    def spy(ids, positions, slots, *rest):
        before = [c.clone() for c in e.runner.kv_caches]
        hidden = replay(ids, positions, slots, *rest)
        for old, new in zip(before, e.runner.kv_caches, strict=True):  # padding rows write the scratch block only
            changed = (old != new).flatten(3).any(-1).any(0).flatten().nonzero().flatten().tolist()
            assert set(changed) <= set(slots) | scratch
        sizes.append(len(ids))
        return hidden

    graphs.run = spy
    assert [o.token_ids for o in llm.generate(prompts, params)] == expected
    assert {3, 5, 6, 7} & set(sizes) and max(sizes) <= 8  # padded batches ran; 9+ decode rows stayed eager
    assert e.blocks.num_free == e.blocks.num_blocks
