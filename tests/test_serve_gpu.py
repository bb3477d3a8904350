"""GPU: the engine with the Triton attention backend and fused layer ops against the CPU engine (tiny random
model, fp32, greedy), and under a small KV cache that forces preemption. Skipped without a GPU."""

import pytest
from tiny_llama import write_tiny_model

from kernelkit.serve import LLM, SamplingParams

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_gpu_engine_matches_cpu_engine(tiny):
    prompts = [[(5 * i + j) % 280 + 2 for j in range(n)] for i, n in enumerate((70, 3, 33, 128))]
    cpu = [o.token_ids for o in LLM(tiny, device="cpu").generate(prompts, GREEDY)]
    gpu_llm = LLM(tiny, device="cuda", dtype="fp32", max_num_batched_tokens=64)
    assert [o.token_ids for o in gpu_llm.generate(prompts, GREEDY)] == cpu
    assert [o.token_ids for o in gpu_llm.generate(prompts, GREEDY)] == cpu  # prefix-cache hits
    assert gpu_llm.engine.blocks.num_free == gpu_llm.engine.blocks.num_blocks


def test_gpu_engine_bf16_runs_and_frees_blocks(tiny):
    llm = LLM(tiny, device="cuda", dtype="bf16", gpu_memory_utilization=0.3)
    outs = llm.generate([[3, 4, 5]] * 8, [SamplingParams(max_tokens=16, seed=i, ignore_eos=True) for i in range(8)])
    assert all(len(o.token_ids) == 16 for o in outs)
    assert llm.engine.blocks.num_free == llm.engine.blocks.num_blocks


def test_cuda_graph_decode_matches_eager(tiny):
    """Decode steps replay captured graphs (sizes 1..16 here, padded), prefill stays eager; tokens equal
    enforce_eager's, and the graphs were really captured and used."""
    prompts = [[(3 * i + j) % 280 + 2 for j in range(5 + 7 * i)] for i in range(13)]
    params = [SamplingParams(temperature=0.8 if i % 2 else 0, seed=i, max_tokens=10 + i, ignore_eos=True)
              for i in range(13)]
    eager = LLM(tiny, device="cuda", dtype="fp32", enforce_eager=True, max_num_seqs=16, gpu_memory_utilization=0.2)
    assert eager.engine.runner.graphs is None
    expected = [o.token_ids for o in eager.generate(prompts, params)]
    llm = LLM(tiny, device="cuda", dtype="fp32", max_num_seqs=16, gpu_memory_utilization=0.4)
    graphs = llm.engine.runner.graphs
    assert sorted(graphs.graphs) == [1, 2, 4, 8, 16]
    sizes, replay = [], graphs.run
    graphs.run = lambda ids, *rest: sizes.append(len(ids)) or replay(ids, *rest)
    assert [o.token_ids for o in llm.generate(prompts, params)] == expected
    assert 13 in sizes and 1 in sizes
    assert llm.engine.blocks.num_free == llm.engine.blocks.num_blocks


def test_gpu_engine_serves_awq_like_the_cpu_engine(tiny, tmp_path):
    """A w4a16-rtn checkpoint (group 64: repacked into the tensor-core layout on the GPU), CUDA graphs on: in
    fp32, through the reference (the CUDA kernel takes 16-bit activations), the CPU engine's greedy tokens; in
    bf16, through the CUDA kernel, captured decode steps give the eager engine's tokens."""
    from kernelkit.convert import convert
    from kernelkit.ops.dispatch import last_used

    out = convert(tiny, tmp_path / "awq", "w4a16-rtn", progress=False)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special", "chat")):
            (out / f.name).write_bytes(f.read_bytes())
    prompts = [[(7 * i + j) % 280 + 2 for j in range(n)] for i, n in enumerate((9, 40, 3))]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    cpu = [o.token_ids for o in LLM(out, device="cpu").generate(prompts, params)]
    gpu = LLM(out, device="cuda", dtype="fp32", gpu_memory_utilization=0.3)
    assert gpu.engine.model.model.layers[0].self_attn.qkv_proj.w4_layout == "mma"
    assert [o.token_ids for o in gpu.generate(prompts, params)] == cpu
    assert last_used()["w4a16_gemm"] == "torch"
    del gpu
    graphs = LLM(out, device="cuda", dtype="bf16", gpu_memory_utilization=0.3)
    captured = [o.token_ids for o in graphs.generate(prompts, params)]
    assert last_used()["w4a16_gemm"] == "cuda"
    del graphs
    eager = LLM(out, device="cuda", dtype="bf16", gpu_memory_utilization=0.3, enforce_eager=True)
    assert [o.token_ids for o in eager.generate(prompts, params)] == captured
