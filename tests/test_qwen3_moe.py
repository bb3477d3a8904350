"""Qwen3-MoE in the engine against transformers' ``Qwen3MoeForCausalLM`` (CPU, fp32, small random configs with
awkward sizes): prefill logits, greedy tokens across batch compositions, which layers are sparse, the router kept
unquantized, and checkpoints with missing experts."""

import json

import pytest
import torch
from engine_checks import prefill_logits
from tiny_llama import write_tiny_tokenizer
from tiny_moe import CONFIG, VARIANTS, write_tiny_moe

from kernelkit.layers import CheckpointMismatch, FusedMoE, ReplicatedLinear, UnquantizedLinearMethod
from kernelkit.serve import LLM, SamplingParams
from kernelkit.serve.model import registry
from kernelkit.serve.model.config import UnsupportedModel
from kernelkit.serve.model.layers import MLP, SparseMoeBlock

PROMPTS = [[0, 5, 17, 33, 101], [0, 250, 7], [0, 9, 9, 9, 9, 9, 9, 9, 9, 12, 40, 41, 42], [0]]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny_moe(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, write_tiny_moe(path, request.param), LLM(str(path), device="cpu")


def test_sparse_layers_and_the_router_follow_the_config(tiny_moe):
    variant, path, _, llm = tiny_moe
    model = llm.engine.model
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen3MoeForCausalLM"]
    sparse = [i for i, layer in enumerate(model.model.layers) if isinstance(layer.mlp, SparseMoeBlock)]
    assert sparse == VARIANTS[variant][1]
    assert all(isinstance(layer.mlp, MLP) for i, layer in enumerate(model.model.layers) if i not in sparse)
    block = model.model.layers[sparse[0]].mlp
    assert isinstance(block.gate, ReplicatedLinear) and isinstance(block.gate.quant_method, UnquantizedLinearMethod)
    assert isinstance(block.experts, FusedMoE) and block.experts.w13_weight.shape == (8, 80, 96)
    assert block.experts.renormalize == VARIANTS[variant][0]["norm_topk_prob"]


def test_prefill_logits_and_greedy_tokens_match_transformers(tiny_moe):
    _, _, reference, llm = tiny_moe
    for ids in PROMPTS:
        with torch.no_grad():
            theirs = reference(torch.tensor([ids])).logits[0]
        assert (prefill_logits(llm, ids) - theirs).abs().max().item() < 1e-3
    for ids in PROMPTS:
        with torch.no_grad():
            expected = reference.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32, do_sample=False)
        assert llm.generate([ids], GREEDY)[0].token_ids == expected[0, len(ids):].tolist()


def test_same_tokens_across_batch_compositions(tiny_moe):
    _, path, _, llm = tiny_moe
    alone = [llm.generate([p], GREEDY)[0].token_ids for p in PROMPTS]
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == alone
    chunked = LLM(str(path), device="cpu", max_num_batched_tokens=8, block_size=4)
    assert [o.token_ids for o in chunked.generate(PROMPTS, GREEDY)] == alone  # chunked prefill
    assert [o.token_ids for o in chunked.generate(PROMPTS[::-1], GREEDY)][::-1] == alone  # prefix-cache hits


def test_a_checkpoint_missing_an_expert_names_it(tmp_path):
    from safetensors.torch import load_file, save_file

    write_tiny_moe(tmp_path, "renormalized")
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["model.layers.2.mlp.experts.5.up_proj.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatch, match=r"missing tensors \['model.layers.2.mlp.experts.5.up_proj.weight'\]"):
        LLM(str(tmp_path), device="cpu")


def test_dummy_weights_build_a_moe_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, **VARIANTS["renormalized"][0],
                                                      "architectures": ["Qwen3MoeForCausalLM"]}))
    write_tiny_tokenizer(tmp_path)
    llm = LLM(str(tmp_path), device="cpu", load_format="dummy")
    out = llm.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert len(out.token_ids) == 4


def test_moe_configs_the_engine_cannot_run_are_named():
    base = {**CONFIG, "architectures": ["Qwen3MoeForCausalLM"]}
    _, cfg = registry.resolve({**base, "num_experts": None, "num_local_experts": 8})  # transformers 5's key
    assert cfg.moe.num_experts == 8 and cfg.moe.top_k == 3
    with pytest.raises(UnsupportedModel, match="num_experts >= num_experts_per_tok >= 1, got 2 and 3"):
        registry.resolve({**base, "num_experts": 2})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_engine_serves_moe_like_the_cpu_engine(tiny_moe):
    """fp32 on the GPU (every expert on every token, captured in CUDA graphs) gives the CPU engine's greedy
    tokens; bf16 with ``torch._grouped_mm`` experts: captured decode steps give the eager engine's tokens."""
    _, path, _, llm = tiny_moe
    cpu = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    gpu = LLM(str(path), device="cuda", dtype="fp32", gpu_memory_utilization=0.2)
    assert [o.token_ids for o in gpu.generate(PROMPTS, GREEDY)] == cpu
    assert gpu.engine.runner.graphs is not None
    del gpu
    eager = LLM(str(path), device="cuda", dtype="bf16", enforce_eager=True, gpu_memory_utilization=0.2)
    expected = [o.token_ids for o in eager.generate(PROMPTS, GREEDY)]
    del eager
    graphs = LLM(str(path), device="cuda", dtype="bf16", gpu_memory_utilization=0.2)
    assert [o.token_ids for o in graphs.generate(PROMPTS, GREEDY)] == expected
    assert graphs.engine.runner.graphs is not None  # decode steps were captured
