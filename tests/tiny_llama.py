"""A tiny random llama checkpoint in HF format, with awkward sizes (hidden 192: not a multiple of 128)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 192, "intermediate_size": 320,
    "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 64, "num_hidden_layers": 2,
    "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
    "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
}


def tiny_llama_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, inter, heads, kv, hd, vocab = 192, 320, 3, 1, 64, 300

    def w(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).to(torch.bfloat16)

    out = {"model.embed_tokens.weight": w(vocab, h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16),
           "lm_head.weight": w(vocab, h)}
    for i in range(2):
        p = f"model.layers.{i}."
        out |= {p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                p + "self_attn.q_proj.weight": w(heads * hd, h), p + "self_attn.k_proj.weight": w(kv * hd, h),
                p + "self_attn.v_proj.weight": w(kv * hd, h), p + "self_attn.o_proj.weight": w(h, heads * hd),
                p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
                p + "mlp.down_proj.weight": w(h, inter)}
    return out


def write_tiny_llama(path: Path, seed: int = 0, shards: int = 2, config: dict | None = None) -> dict[str, torch.Tensor]:
    """Write config.json and ``shards`` safetensors files (+ index when sharded); returns the tensors."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = tiny_llama_tensors(seed)
    (path / "config.json").write_text(json.dumps(config or CONFIG))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"))
        return tensors
    weight_map = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(path / file))
        weight_map |= {n: file for n in part}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors


def write_tiny_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer with fewer than 300 tokens (fits the tiny model's vocabulary), saved in HF
    format with a chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20, "hello world, tokens and blocks"],
                            vocab_size=290, special_tokens=["<s>", "</s>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tok.save_pretrained(path)


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """A tiny llama checkpoint with a tokenizer: everything the serving engine needs."""
    write_tiny_llama(path, seed, shards=1, config={**CONFIG, "eos_token_id": 1, "bos_token_id": 0})
    write_tiny_tokenizer(path)
    return path
