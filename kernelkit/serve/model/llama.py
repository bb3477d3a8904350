"""The Llama-family decoder (Llama 2/3, Mistral, SmolLM2, Qwen2 with q/k/v bias, Qwen3 with q/k RMSNorm, Qwen3-MoE
with sparse MoE blocks) over a paged KV cache: a composition of the shared blocks in ``layers.py``. Module names
follow HF checkpoints, q/k/v and gate/up merged as ``packed_modules_mapping`` says, each MoE block's experts
stacked into one ``FusedMoE`` (``mlp.experts.w13_weight``, ``mlp.experts.w2_weight``).

Forward takes the new tokens of a whole batch flattened into T rows (prefill chunks and decode tokens mixed);
attention runs through an ``AttentionBackend``. Models: Touvron et al. 2023 (arXiv 2302.13971, 2307.09288);
Qwen3 technical report (arXiv 2505.09388) and transformers' ``modeling_qwen3_moe.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelkit.layers import FusedMoE, ParallelLMHead, QuantContext, VocabParallelEmbedding
from kernelkit.layers.loader import Rule, packed_rules
from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata
from kernelkit.serve.model.config import ModelConfig
from kernelkit.serve.model.layers import DecoderLayer, RMSNorm
from kernelkit.serve.model.rope import cos_sin, inverse_frequencies


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantContext, dtype: torch.dtype, tp: dict):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size, dtype, "model.embed_tokens", **tp)
        self.layers = nn.ModuleList(DecoderLayer(cfg, quant, f"model.layers.{i}", dtype, i, tp)
                                    for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)


class LlamaForCausalLM(nn.Module):
    """forward(input_ids [T], positions [T], kv_caches, meta) -> final hidden states [T, hidden].

    Args:
        cfg: the model's shapes and switches.
        scheme: the checkpoint's quantization scheme (None: unquantized).
        dtype: activations and unquantized parameters.
        tp_rank, tp_size: this process's tensor-parallel rank and the number of ranks (``kernelkit.layers``
            splits heads, MLP and vocabulary; every rank computes the same hidden states and logits).
    Raises:
        ValueError: a model the ranks cannot split (heads, sizes or scale blocks; the layers name which).
    """

    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self, cfg: ModelConfig, scheme=None, dtype: torch.dtype = torch.float32, tp_rank: int = 0,
                 tp_size: int = 1):
        super().__init__()
        self.config, tp = cfg, {"tp_rank": tp_rank, "tp_size": tp_size}
        quant = QuantContext(scheme, self.packed_modules_mapping)
        self.model = LlamaModel(cfg, quant, dtype, tp)
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size, quant=quant, prefix="lm_head",
                                      params_dtype=dtype, **tp)
        self.num_kv_heads = self.model.layers[0].self_attn.num_kv_heads  # this rank's, for its KV cache
        if cfg.tie_word_embeddings:
            self.lm_head.tie(self.model.embed_tokens)
        # fp32 always (a buffer would follow the model to bf16); moved once to the device of the first positions
        # (a host-to-device copy per step could not be captured in a CUDA graph).
        self.inv_freq = inverse_frequencies(cfg.rope, cfg.head_dim)

    def checkpoint_rules(self) -> list[Rule]:
        """How checkpoint names reach the merged parameters (``kernelkit.layers.loader``); the experts' rules
        first, so that ``experts.3.gate_proj`` is not taken for a dense ``gate_proj``."""
        experts = FusedMoE.checkpoint_rules(self.config.moe.num_experts) if self.config.moe else []
        return experts + packed_rules(self.packed_modules_mapping)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                meta: AttentionMetadata, backend: AttentionBackend) -> torch.Tensor:
        x, residual = self.model.embed_tokens(input_ids), None
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        cos, sin = cos_sin(self.inv_freq, positions, x.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            x, residual = layer(x, residual, cos, sin, kv_cache, meta, backend)
        return self.model.norm(x, residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [N, vocab] for hidden states [N, hidden]."""
        return self.lm_head(hidden).float()
