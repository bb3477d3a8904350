"""The Llama-family decoder (Llama 2/3, Mistral, SmolLM2, Qwen2 with q/k/v bias, Qwen3 with q/k RMSNorm) over a
paged KV cache. Module and parameter names follow HF checkpoints, so ``load_state_dict`` takes them as they are.

Forward takes the new tokens of a whole batch flattened into T rows (prefill chunks and decode tokens mixed);
attention runs through an ``AttentionBackend``. Model: Touvron et al. 2023 (arXiv 2302.13971, 2307.09288).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelkit.ops.layers.ops import rms_norm, rotary, silu_and_mul
from kernelkit.quant.fp8_block.linear import Fp8BlockLinear
from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata
from kernelkit.serve.model.config import ModelConfig
from kernelkit.serve.model.rope import cos_sin, inverse_frequencies


class RMSNorm(nn.Module):
    """kernelkit's fused RMSNorm op; with a residual, adds it first and returns the sum too (vLLM's layout)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        out, summed = rms_norm(x.reshape(-1, x.shape[-1]), self.weight, self.eps,
                               None if residual is None else residual.reshape(-1, x.shape[-1]))
        return out.view(x.shape) if residual is None else (out.view(x.shape), summed.view(x.shape))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.q_proj = nn.Linear(h, cfg.num_heads * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(h, cfg.num_kv_heads * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(cfg.num_heads * d, h, bias=False)
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(d, cfg.rms_norm_eps), RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, kv_cache, meta: AttentionMetadata, backend: AttentionBackend):
        q = self.q_proj(x).view(-1, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(-1, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(-1, self.num_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        out = backend.forward(q, k, v, kv_cache, meta, self.head_dim**-0.5)
        return self.o_proj(out.flatten(1))


class MLP(nn.Module):
    """SwiGLU MLP. After loading, ``fuse_gate_up`` merges gate_proj and up_proj into one gate_up_proj (one GEMM,
    then kernelkit's silu_and_mul), as vLLM's merged column linear, where the layer types allow it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    @torch.no_grad()
    def fuse_gate_up(self) -> None:
        gate, up = self.gate_proj, self.up_proj
        if type(gate) is nn.Linear and type(up) is nn.Linear:
            fused = nn.Linear(gate.in_features, 2 * gate.out_features, bias=False, device=gate.weight.device,
                              dtype=gate.weight.dtype)
            fused.weight.copy_(torch.cat([gate.weight, up.weight]))
        elif (isinstance(gate, Fp8BlockLinear) and type(up) is type(gate)
              and gate.out_features % gate.block_size[0] == 0):
            fused = Fp8BlockLinear(gate.in_features, 2 * gate.out_features, False, gate.block_size,
                                   device=gate.weight.device)
            fused.weight.copy_(torch.cat([gate.weight, up.weight]))
            fused.weight_scale_inv.copy_(torch.cat([gate.weight_scale_inv, up.weight_scale_inv]))
        else:
            return  # other layer types keep two GEMMs
        self.gate_up_proj = fused
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "gate_up_proj"):
            return self.down_proj(silu_and_mul(self.gate_up_proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block; the residual stream travels beside the hidden states so each norm fuses its add."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, residual, cos, sin, kv_cache, meta, backend):
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, cos, sin, kv_cache, meta, backend)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """forward(input_ids [T], positions [T], kv_caches, meta) -> final hidden states [T, hidden]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # fp32 always (a buffer would follow the model to bf16); moved once to the device of the first positions
        # (a host-to-device copy per step could not be captured in a CUDA graph).
        self.inv_freq = inverse_frequencies(cfg.rope, cfg.head_dim)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                meta: AttentionMetadata, backend: AttentionBackend) -> torch.Tensor:
        x, residual = self.model.embed_tokens(input_ids), None
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        cos, sin = cos_sin(self.inv_freq, positions, x.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            x, residual = layer(x, residual, cos, sin, kv_cache, meta, backend)
        return self.model.norm(x, residual)[0]

    def fuse(self) -> None:
        """Merge layers that run faster together (gate/up projections); call after the weights are loaded."""
        for layer in self.model.layers:
            layer.mlp.fuse_gate_up()

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [N, vocab] for hidden states [N, hidden]."""
        return self.lm_head(hidden).float()
