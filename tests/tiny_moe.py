"""A tiny random Qwen3-MoE checkpoint as transformers saves it (8 experts, top-3, awkward sizes), with a tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_llama import write_tiny_tokenizer

CONFIG = {
    "vocab_size": 300, "hidden_size": 96, "intermediate_size": 72, "moe_intermediate_size": 40,
    "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 32, "num_experts": 8,
    "num_experts_per_tok": 3, "max_position_embeddings": 512, "tie_word_embeddings": False, "bos_token_id": 0,
    "eos_token_id": 1, "rms_norm_eps": 1e-6,
}
VARIANTS = {  # (norm_topk_prob, decoder_sparse_step, mlp_only_layers) -> the sparse layers
    "renormalized": ({"norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [1]}, [0, 2, 3]),
    "every-second": ({"norm_topk_prob": False, "decoder_sparse_step": 2, "mlp_only_layers": []}, [1, 3]),
}

def write_tiny_moe(path: Path, variant: str, overrides: dict | None = None):
    """A transformers Qwen3-MoE with random weights (router rows spread out, so that top-k has no near-ties),
    saved as transformers saves it (experts one by one, as on the Hub), with a tokenizer."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(len(variant))
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**CONFIG, **(overrides or {})}, **VARIANTS[variant][0])).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0, 0.5 if name.endswith("mlp.gate.weight") else 0.06)
    model.save_pretrained(path)
    write_tiny_tokenizer(path)
    return model
