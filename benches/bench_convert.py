"""``kernelkit convert`` on a synthetic checkpoint of at least 8 GB: peak RSS (must stay under 2 GB) and
throughput (GB of input per second). Llama-3-8B shapes with 16 of its 32 layers, random bf16 weights, four
input shards. Runs on CPU (or the GPU when present); the input is generated once into
$KERNELKIT_BENCH_DATA (default /tmp/kernelkit-bench-ckpt) and reused.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

LAYERS, HIDDEN, INTER, VOCAB, KV = 16, 4096, 14336, 128256, 1024
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
          "intermediate_size": INTER, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
          "num_hidden_layers": LAYERS, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def _shapes():
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        yield from ((p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,)),
                    (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.k_proj.weight", (KV, HIDDEN)),
                    (p + "self_attn.v_proj.weight", (KV, HIDDEN)), (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                    (p + "mlp.gate_proj.weight", (INTER, HIDDEN)), (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
                    (p + "mlp.down_proj.weight", (HIDDEN, INTER)))
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCAB, HIDDEN)


def _make_checkpoint(path: Path, shard_bytes: int = 2_500_000_000) -> None:
    if (path / "config.json").is_file():
        return
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shard, size, weight_map, files = {}, 0, {}, []

    def flush():
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, str(path / name))
        weight_map.update({k: name for k in shard})
        files.append(name)

    for name, shape in _shapes():
        shard[name] = (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
        size += shard[name].numel() * 2
        if size >= shard_bytes:
            flush()
            shard, size = {}, 0
    if shard:
        flush()
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(CONFIG))


@pytest.mark.slow
def bench_convert_8gb(record, tmp_path):
    src = Path(os.environ.get("KERNELKIT_BENCH_DATA", "/tmp/kernelkit-bench-ckpt"))
    _make_checkpoint(src)
    in_bytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    assert in_bytes >= 8e9
    dst = tmp_path / "fp8"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kernelkit", "convert", str(src), str(dst)], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    out_bytes = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    record("convert", {"input GB": f"{in_bytes / 1e9:.2f}", "output GB": f"{out_bytes / 1e9:.2f}",
                       "seconds": f"{seconds:.0f}", "GB/s (input)": f"{in_bytes / 1e9 / seconds:.3f}",
                       "peak RSS GB": f"{peak_rss / 1e9:.2f}", "device": device})
    shutil.rmtree(dst)
    assert before <= peak_rss and peak_rss < 2e9
