"""GPU: the tensor-parallel path on one GPU. ``kernelkit.distributed``'s collectives on an NCCL process group of
one rank, eagerly and replayed from a CUDA graph, return their input (a sum over one rank); the engine on the
``mp`` executor at one rank (an NCCL process group of one and a gloo control group, the KV blocks agreed over
it; no worker to broadcast steps to) gives the same greedy tokens and logprobs as the single-process engine, with
CUDA graphs on, and leaves the process group when closed. With two GPUs, Llama-3-8B shapes (random weights,
bf16 and fp8-block) at TP = 2 give TP = 1's greedy tokens. Skipped without a GPU."""

import gc
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny_llama import write_tiny_model

from kernelkit import distributed
from kernelkit.serve import LLM, SamplingParams

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2)


def test_nccl_collectives_of_one_rank_eager_and_in_a_cuda_graph(tmp_path):
    distributed.init_tensor_parallel(0, 1, f"file://{tmp_path / 'rendezvous'}", "cuda")
    try:
        assert dist.get_backend() == "nccl"
        x = torch.randn(7, 333, device="cuda", dtype=torch.bfloat16)
        want = x.clone()
        assert distributed.all_reduce(x) is x and torch.equal(x, want)
        torch.testing.assert_close(distributed.all_gather(x), want, rtol=0, atol=0)
        static = torch.empty_like(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capturing stream, as torch's CUDA graph notes ask
            distributed.all_reduce(static.copy_(x) * 2)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = distributed.all_reduce(static * 2)
        for _ in range(2):  # fresh inputs each replay
            fresh = torch.randn_like(x)
            static.copy_(fresh)
            graph.replay()
            torch.cuda.synchronize()
            torch.testing.assert_close(out, fresh * 2, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


def test_mp_executor_at_one_rank_generates_as_one_process(tmp_path):
    model = write_tiny_model(tmp_path / "tiny")
    prompts = [[(5 * i + j) % 280 + 2 for j in range(n)] for i, n in enumerate((70, 3, 33, 128, 9))]
    kw = dict(device="cuda", dtype="fp32", max_num_seqs=8, gpu_memory_utilization=0.3)
    single = LLM(model, **kw)
    want = single.generate(prompts, GREEDY)
    del single
    llm = LLM(model, distributed_executor_backend="mp", **kw)
    try:
        assert dist.is_initialized() and dist.get_backend() == "nccl" and dist.get_world_size() == 1
        assert llm.engine.runner.graphs is not None  # decode steps replay CUDA graphs on this path too
        got = llm.generate(prompts, GREEDY)
    finally:
        llm.close()
    assert not dist.is_initialized()
    for a, b in zip(want, got, strict=True):
        assert b.token_ids == a.token_ids
        for (tok_a, lp_a, _), (tok_b, lp_b, _) in zip(a.logprobs, b.logprobs, strict=True):
            assert tok_a == tok_b and abs(lp_a - lp_b) < 1e-4


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="needs exactly one visible GPU")
def test_more_ranks_than_gpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tensor_parallel_size=2 needs as many GPUs .* 1 visible"):
        LLM(write_tiny_model(tmp_path / "tiny"), device="cuda", tensor_parallel_size=2)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("quant", ["bf16", "fp8-block"])
def test_llama3_8b_shapes_at_tensor_parallel_size_2_match_size_1(tmp_path, quant):
    """Random weights (every rank draws the whole model and keeps its share), 5 prompts, 32 greedy tokens. The
    ranks add their partial sums in another order than one GPU does, so a token may differ where TP = 1's top
    two were within 0.05 of each other in logprob (a near-tie); the rest of that sequence is not compared.
    Elsewhere the tokens are equal and their logprobs within 0.05."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "benches"))
    from serve_models import LLAMA3_8B, make_model_dir

    model = str(make_model_dir(tmp_path / "llama3-8b", LLAMA3_8B, quant=quant))
    prompts = [[(37 * i + 11 * j) % 128000 + 5 for j in range(n)] for i, n in enumerate((70, 3, 33, 300, 9))]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=2)
    kw = dict(load_format="dummy", max_num_seqs=8, gpu_memory_utilization=0.5)
    single = LLM(model, **kw)
    want = single.generate(prompts, params)
    del single
    gc.collect()
    llm = LLM(model, tensor_parallel_size=2, **kw)
    try:
        got = llm.generate(prompts, params)
    finally:
        llm.close()
    compared = 0
    for a, b in zip(want, got, strict=True):
        for tok_a, tok_b, (lp_a, top_a), (lp_b, _) in zip(a.token_ids, b.token_ids, _top(a), _top(b), strict=True):
            margin = top_a[0] - top_a[1]
            if tok_a != tok_b:
                assert margin < 0.05, (tok_a, tok_b, margin)
                break
            assert abs(lp_a - lp_b) < 0.05
            compared += 1
    assert compared >= 5 * 32 // 2  # near-ties are rare: most tokens were compared


def _top(out):
    """(logprob of the sampled token, the two best logprobs) per generated token."""
    return [(lp, sorted((v for _, v in top), reverse=True)) for _, lp, top in out.logprobs]
