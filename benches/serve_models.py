"""Model directories for serving benches: config.json with real shapes and a word-level tokenizer that covers
the vocabulary (prompts are random token ids; the tokenizer only detokenizes). Weights come from
``load_format="dummy"``, so nothing large is written or carried."""

from __future__ import annotations

import json
from pathlib import Path

SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
           "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "num_hidden_layers": 30, "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
           "max_position_embeddings": 8192, "tie_word_embeddings": True, "eos_token_id": 2, "bos_token_id": 1}
LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
             "num_hidden_layers": 32, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
             "max_position_embeddings": 8192, "tie_word_embeddings": False, "eos_token_id": 128001,
             "bos_token_id": 128000}
QWEN3_30B_A3B = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
                 "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                 "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": 32,
                 "num_key_value_heads": 4, "head_dim": 128, "num_hidden_layers": 48, "vocab_size": 151936,
                 "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
                 "tie_word_embeddings": False, "eos_token_id": 151645, "bos_token_id": 151643}
FP8_BLOCK = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm",
       "modules_to_not_convert": ["lm_head", "embed_tokens"]}
QUANT = {"bf16": None, "fp8-block": FP8_BLOCK, "awq": AWQ}
MODELSLIM = {"modelslim-w8a8": "W8A8_DYNAMIC", "modelslim-w4a8": "W4A8_DYNAMIC"}


def modelslim_description(config: dict, kind: str) -> dict:
    """A msModelSlim description for random weights of ``config``: every attention and MLP or expert
    projection's weight of type ``kind`` (routers, embeddings, norms and lm_head FLOAT, as unlisted)."""
    out = {"version": "1.0.0", "model_quant_type": kind, "metadata": {}, "group_size": 0, "optional": {}}
    experts = config.get("num_experts", 0)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        names = [f"self_attn.{x}_proj" for x in "qkvo"]
        if experts and layer not in config.get("mlp_only_layers", []):
            names += [f"mlp.experts.{e}.{x}_proj" for e in range(experts) for x in ("gate", "up", "down")]
        else:
            names += [f"mlp.{x}_proj" for x in ("gate", "up", "down")]
        out |= {f"{p}{n}.weight": kind for n in names}
    return out


def make_model_dir(path: Path, config: dict, fp8_block: bool = False, quant: str | None = None) -> Path:
    """Write config.json (+ quantization_config: fp8-block, or ``quant`` as a QUANT name; for a MODELSLIM name
    a quant_model_description.json instead) and a tokenizer with one word per token id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    qc = FP8_BLOCK if fp8_block else QUANT.get(quant or "bf16")
    (path / "config.json").write_text(json.dumps(config | ({"quantization_config": qc} if qc else {})))
    if quant in MODELSLIM:
        (path / "quant_model_description.json").write_text(json.dumps(modelslim_description(config,
                                                                                            MODELSLIM[quant])))
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(config["vocab_size"])}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token=f"w{config['eos_token_id']}").save_pretrained(path)
    return path
