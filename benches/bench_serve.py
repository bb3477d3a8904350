"""Serving engine throughput and latency on the GPU (issue 4).

- offline: nano-vllm's benchmark, 256 requests with random input and output lengths in [100, 1024] and
  ignore_eos, on SmolLM2-shaped and Llama-3-8B-shaped random weights (bf16 and fp8-block): output tokens/s;
- transformers on the same GPU and weights, same run: static-batch ``generate`` and, when the installed
  version has it, ``generate_batch`` (continuous batching), on a smaller workload both sides also run;
- decode step time at batch 1 against weight bytes / measured copy bandwidth;
- online: ``kernelkit serve`` on SmolLM2-shaped random weights under Poisson load at several rates
  (serve_load.py): TTFT, TPOT and ITL p50/p99, output tokens/s.
Run: ``pytest benches/bench_serve.py`` on a GPU; tables land in $KERNELKIT_BENCH_OUT.
"""

from __future__ import annotations

import gc
import random
import socket
import statistics
import subprocess
import sys
import time

import httpx
import pytest
import torch
from serve_load import make_workload, run_load, table_row
from serve_models import LLAMA3_8B, QWEN3_30B_A3B, SMOLLM2, make_model_dir

from kernelkit.ops.timing import copy_bandwidth_gbs
from kernelkit.serve import LLM, SamplingParams

pytestmark = pytest.mark.gpu


def _workload(n: int, vocab: int, lo: int, hi: int, out_lo: int, out_hi: int, seed: int = 0):
    g = random.Random(seed)
    prompts = [[g.randrange(vocab) for _ in range(g.randint(lo, hi))] for _ in range(n)]
    params = [SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=g.randint(out_lo, out_hi)) for _ in range(n)]
    return prompts, params


def _throughput(llm: LLM, prompts, params) -> float:
    llm.generate(prompts[:2], [SamplingParams(max_tokens=8)] * 2)  # warm up kernels
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params)
    torch.cuda.synchronize()
    return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0)


SHAPES = {"smollm2": SMOLLM2, "llama3-8b": LLAMA3_8B, "qwen3-30b-a3b": QWEN3_30B_A3B}


@pytest.mark.parametrize("shape, quant", [("smollm2", "bf16"), ("llama3-8b", "bf16"), ("llama3-8b", "fp8-block"),
                                         ("llama3-8b", "awq"), ("qwen3-30b-a3b", "bf16"),
                                         ("qwen3-30b-a3b", "modelslim-w8a8"), ("qwen3-30b-a3b", "modelslim-w4a8")])
def bench_offline_throughput(record, tmp_path, shape, quant):
    config = SHAPES[shape]
    model = make_model_dir(tmp_path / shape, config, quant=quant)
    llm = LLM(str(model), load_format="dummy", max_num_seqs=256, max_num_batched_tokens=8192)
    prompts, params = _workload(256, config["vocab_size"], 100, 1024, 100, 1024)
    record("serve_offline", {"model": f"{shape} {quant}", "requests": 256,
                             "output tok/s": f"{_throughput(llm, prompts, params):.0f}"})


def bench_against_transformers(record, tmp_path):
    """Same random SmolLM2-shaped weights and workload (64 requests, inputs 100-512, 128 new tokens)."""
    import transformers

    model = make_model_dir(tmp_path / "smollm2", SMOLLM2)
    prompts, params = _workload(64, SMOLLM2["vocab_size"], 100, 512, 128, 128)
    llm = LLM(str(model), load_format="dummy", max_num_seqs=256)
    ours = _throughput(llm, prompts, params)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2)).to("cuda", torch.bfloat16).eval()
    missing, unexpected = hf.load_state_dict(_unfused_state_dict(llm.engine.model), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    pad = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (pad - len(p)) + p for p in prompts], device="cuda")
    mask = torch.tensor([[0] * (pad - len(p)) + [1] * len(p) for p in prompts], device="cuda")
    with torch.no_grad():
        hf.generate(ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        hf.generate(ids, attention_mask=mask, max_new_tokens=128, min_new_tokens=128, do_sample=True,
                    temperature=0.6)
        torch.cuda.synchronize()
    static = 64 * 128 / (time.perf_counter() - t0)
    row = {"workload": "64 req, in 100-512, out 128", "kernelkit tok/s": f"{ours:.0f}",
           "transformers generate tok/s": f"{static:.0f}"}
    if hasattr(hf, "generate_batch"):
        import inspect

        from transformers import GenerationConfig

        cfg = GenerationConfig(max_new_tokens=128, do_sample=True, temperature=0.6)
        # a first call sizes the manager and captures its CUDA graphs; the second, timed, reuses them
        warm = {"persistent_manager": True} if "persistent_manager" in inspect.signature(hf.generate_batch).parameters \
            else {}
        hf.generate_batch(inputs=prompts, generation_config=cfg, **warm)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs = hf.generate_batch(inputs=prompts, generation_config=cfg, **warm)
        torch.cuda.synchronize()
        tokens = sum(len(o.generated_tokens) for o in outs.values())  # EOS may end some early: count what came
        row["transformers generate_batch tok/s"] = f"{tokens / (time.perf_counter() - t0):.0f}"
    row["kernelkit / best transformers"] = f"{ours / max(float(v) for k, v in row.items() if 'transformers' in k):.1f}x"
    record("serve_vs_transformers", row)


def _unfused_state_dict(model) -> dict[str, torch.Tensor]:
    """The engine model's weights under HF Llama names: its fused qkv_proj and gate_up_proj split back."""
    cfg = model.config
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    out = {}
    for name, tensor in model.state_dict().items():
        if ".gate_up_proj." in name:
            for part, t in zip(("gate_proj", "up_proj"), tensor.chunk(2), strict=True):
                out[name.replace("gate_up_proj", part)] = t
        elif ".qkv_proj." in name:
            for part, t in zip(("q_proj", "k_proj", "v_proj"), tensor.split([q, kv, kv]), strict=True):
                out[name.replace("qkv_proj", part)] = t
        else:
            out[name] = tensor
    return out


@pytest.mark.parametrize("shape, quant, eager", [("llama3-8b", "bf16", False), ("llama3-8b", "bf16", True),
                                                 ("llama3-8b", "fp8-block", False), ("llama3-8b", "fp8-block", True),
                                                 ("llama3-8b", "awq", False), ("qwen3-30b-a3b", "bf16", False),
                                                 ("qwen3-30b-a3b", "modelslim-w8a8", False),
                                                 ("qwen3-30b-a3b", "modelslim-w4a8", False)])
def bench_decode_step_batch1(record, tmp_path, shape, quant, eager):
    _decode_step(record, tmp_path, shape, quant, eager)


@pytest.mark.parametrize("executor", ["uni", "mp"])
def bench_decode_step_tensor_parallel_1(record, tmp_path, executor):
    """The batch-1 decode step of Llama-3-8B shapes in bf16 with CUDA graphs, in one process (``uni``) and on
    the tensor-parallel path at one rank (``mp``: an NCCL process group of one beside a gloo control group;
    with no worker there is no step to broadcast): what the tensor-parallel machinery costs when there is
    nothing to split."""
    _decode_step(record, tmp_path, "llama3-8b", "bf16", False, distributed_executor_backend=executor)


@pytest.mark.parametrize("quant", ["bf16", "fp8-block"])
@pytest.mark.parametrize("pdl", ["0", "1"])
def bench_decode_step_pdl(record, tmp_path, monkeypatch, quant, pdl):
    """The batch-1 decode step of Llama-3-8B shapes with CUDA graphs, kernelkit's Triton kernels launched
    without (``KERNELKIT_PDL=0``) and with programmatic dependent launch (``kernelkit.ops.pdl``)."""
    from kernelkit.ops import pdl as pdl_module

    monkeypatch.setenv("KERNELKIT_PDL", pdl)
    pdl_module.enabled.cache_clear()
    try:
        _decode_step(record, tmp_path, "llama3-8b", quant, False, label=f", KERNELKIT_PDL={pdl}")
    finally:
        monkeypatch.undo()
        pdl_module.enabled.cache_clear()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("quant", ["bf16", "fp8-block"])
def bench_tensor_parallel_2(record, tmp_path, quant):
    """Llama-3-8B shapes at tensor-parallel size 2 against 1, in the same run: the batch-1 decode step with CUDA
    graphs (issue 14's target: TP = 2 at most 0.65x TP = 1, all-reduces included) and offline throughput on
    nano-vllm's workload."""
    step = {tp: _decode_step(record, tmp_path / f"decode-tp{tp}", "llama3-8b", quant, False, tensor_parallel_size=tp)
            for tp in (1, 2)}
    prompts, params = _workload(256, LLAMA3_8B["vocab_size"], 100, 1024, 100, 1024)
    tok_s = {}
    for tp in (1, 2):
        model = make_model_dir(tmp_path / f"offline-tp{tp}", LLAMA3_8B, quant=quant)
        llm = LLM(str(model), load_format="dummy", max_num_seqs=256, max_num_batched_tokens=8192,
                  tensor_parallel_size=tp)
        try:
            tok_s[tp] = _throughput(llm, prompts, params)
        finally:
            llm.close()
    record("serve_tensor_parallel", {"model": f"llama3-8b {quant}", "decode step ms, TP=1": f"{step[1] * 1e3:.2f}",
                                     "decode step ms, TP=2": f"{step[2] * 1e3:.2f}",
                                     "TP=2 / TP=1 step": f"{step[2] / step[1]:.2f}x",
                                     "offline tok/s, TP=1": f"{tok_s[1]:.0f}", "offline tok/s, TP=2": f"{tok_s[2]:.0f}",
                                     "TP=2 / TP=1 tok/s": f"{tok_s[2] / tok_s[1]:.2f}x"},
           ours={"decode step TP=1": step[1] * 1e3, "decode step TP=2": step[2] * 1e3,
                 "offline ms per output token TP=1": 1e3 / tok_s[1],
                 "offline ms per output token TP=2": 1e3 / tok_s[2]})


MODE_LABELS = {"distributed_executor_backend": "{} executor", "tensor_parallel_size": "TP={}"}


def _decode_step(record, tmp_path, shape, quant, eager, label: str = "", **engine_kw) -> float:
    """Record the batch-1 decode step (median of steps 32 on, seconds) and return it; ``label`` is added to the
    mode column. The floor counts the bytes rank 0 reads: its share of the model when tensor parallel."""
    config = SHAPES[shape]
    model = make_model_dir(tmp_path / shape, config, quant=quant)
    llm = LLM(str(model), load_format="dummy", enforce_eager=eager, max_num_seqs=8, **engine_kw)
    engine = llm.engine
    try:
        # bytes one decode step must read: every parameter once, except an untied embedding (one row is gathered;
        # parameters() yields a tied embedding once, and lm_head reads all of it) and the experts a token does not
        # route to (top_k of num_experts are read)
        embed = engine.model.model.embed_tokens.weight
        active = config.get("num_experts_per_tok", 1) / config.get("num_experts", 1)
        weight_bytes = sum(p.numel() * p.element_size() * (active if ".experts." in name else 1)
                           for name, p in engine.model.named_parameters()
                           if p is not embed or engine.model.lm_head.weight is embed)
        engine.add_request("decode", list(range(100, 228)),
                           SamplingParams(temperature=0, max_tokens=160, ignore_eos=True))
        steps, forwards, run = [], [], engine.runner.run

        def timed_run(*args, **kwargs):  # the forward alone (graph replay or eager launches), event-timed
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = run(*args, **kwargs)
            end.record()
            forwards.append((start, end))
            return out

        engine.runner.run = timed_run
        while engine.has_unfinished():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.step()
            torch.cuda.synchronize()
            steps.append(time.perf_counter() - t0)
        decode = sorted(steps[32:])[len(steps[32:]) // 2]
        forward = statistics.median(start.elapsed_time(end) for start, end in forwards[32:]) / 1e3
        floor = weight_bytes / (copy_bandwidth_gbs() * 1e9)  # copy rate counts bytes read + written: all traffic
        record("serve_decode_batch1", {"model": f"{shape} {quant}",
                                       "mode": ("eager" if eager else "CUDA graphs") + "".join(
                                           ", " + MODE_LABELS[k].format(v) for k, v in engine_kw.items()) + label,
                                       "weight GB": f"{weight_bytes / 1e9:.2f}",
                                       "decode step ms": f"{decode * 1e3:.2f}", "forward ms": f"{forward * 1e3:.2f}",
                                       "floor ms": f"{floor * 1e3:.2f}", "ratio": f"{decode / floor:.2f}x"},
               ours={"decode step": decode * 1e3, "forward": forward * 1e3}, nbytes=int(weight_bytes))
        return decode
    finally:
        llm.close()


def bench_step_host_overhead(record, tmp_path):
    """Where a step's time goes in the offline run (SmolLM2 shapes, 256 requests): host phases (scheduling,
    building inputs, detokenizing and stop checks) against the forward and sampling, which end in a device
    synchronization here so that each phase is timed alone."""
    from kernelkit.serve import engine as engine_module
    from kernelkit.serve import runner as runner_module

    model = make_model_dir(tmp_path / "smollm2", SMOLLM2)
    llm = LLM(str(model), load_format="dummy", max_num_seqs=256, max_num_batched_tokens=8192)
    prompts, params = _workload(256, SMOLLM2["vocab_size"], 100, 1024, 100, 1024)
    llm.generate(prompts[:2], [SamplingParams(max_tokens=8)] * 2)
    spent: dict[str, float] = {}

    def timed(owner, name, sync=False):
        f = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = f(*args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out

        setattr(owner, name, wrapper)

    engine = llm.engine
    timed(engine.scheduler, "schedule")
    timed(runner_module, "host_inputs")
    timed(engine.runner, "run", sync=True)
    timed(engine_module, "sample", sync=True)
    timed(engine, "_advance")
    steps = 0
    step = engine.step

    def counted():
        nonlocal steps
        steps += 1
        return step()

    engine.step = counted
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    llm.generate(prompts, params)
    total = time.perf_counter() - t0
    host = spent["schedule"] + spent["host_inputs"] + spent["_advance"]
    ms = lambda x: f"{1e3 * x / steps:.3f}"  # noqa: E731
    record("serve_step_overhead", {"steps": steps, "step ms": ms(total), "schedule ms": ms(spent["schedule"]),
                                   "inputs (host) ms": ms(spent["host_inputs"]),
                                   "forward incl. inputs ms": ms(spent["run"]), "sample ms": ms(spent["sample"]),
                                   "detokenize+stop ms": ms(spent["_advance"]), "host share": f"{host / total:.0%}"})


@pytest.mark.parametrize("shape, fp8", [("smollm2", False), ("llama3-8b", True)])
def bench_online_load(record, tmp_path, shape, fp8):
    config = {"smollm2": SMOLLM2, "llama3-8b": LLAMA3_8B}[shape]
    model = make_model_dir(tmp_path / shape, config, fp8)
    gc.collect()  # the server is another process: hand back what earlier benches' engines left cached here
    torch.cuda.empty_cache()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "kernelkit", "serve", "--model", str(model), "--port", str(port),
                               "--load-format", "dummy", "--served-model-name", shape, "--max-num-seqs", "256",
                               "--max-num-batched-tokens", "8192", "--max-pending", "1024"])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
            assert server.poll() is None, "kernelkit serve exited"
        run_load(url, shape, make_workload(8, float("inf"), config["vocab_size"], (16, 16), (8, 8)))
        # 100 requests each: about 90 s per model at these rates; new prompts per rate (the same prompts would
        # be prefix-cache hits from the second rate on)
        for seed, rate in enumerate((2.0, 8.0, 32.0, float("inf")), start=1):
            workload = make_workload(100, rate, config["vocab_size"], (100, 1024), (100, 512), seed=seed)
            metrics = run_load(url, shape, workload)
            record("serve_online", {"model": shape + (" fp8-block" if fp8 else " bf16")} | table_row(rate, metrics))
    finally:
        server.terminate()
        server.wait(timeout=120)
