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


@torch.no_grad()
def fuse_linears(parts: list[nn.Module]) -> nn.Module | None:
    """One layer computing ``torch.cat([p(x) for p in parts], -1)`` with one GEMM (vLLM's merged column linear),
    or None where the layer types do not allow it: all plain nn.Linear, or all Fp8BlockLinear of one block size
    whose outputs, except the last one's, are whole weight blocks (the scale rows then concatenate too)."""
    first, bias = parts[0], parts[0].bias is not None
    if any(type(p) is not type(first) or (p.bias is not None) != bias or p.in_features != first.in_features
           for p in parts):
        return None
    out_features = sum(p.out_features for p in parts)
    device, dtype = first.weight.device, (first.bias if bias else first.weight).dtype
    if type(first) is nn.Linear:
        fused = nn.Linear(first.in_features, out_features, bias=bias, device=device, dtype=dtype)
    elif isinstance(first, Fp8BlockLinear) and all(
            p.block_size == first.block_size and p.out_features % p.block_size[0] == 0 for p in parts[:-1]):
        fused = Fp8BlockLinear(first.in_features, out_features, bias, first.block_size, dtype=dtype, device=device)
        fused.weight_scale_inv.copy_(torch.cat([p.weight_scale_inv for p in parts]))
    else:
        return None
    fused.weight.copy_(torch.cat([p.weight for p in parts]))
    if bias:
        fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused


class Attention(nn.Module):
    """Self-attention with GQA; after loading, ``fuse_qkv`` merges q/k/v_proj into one qkv_proj where the layer
    types allow it."""

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

    def fuse_qkv(self) -> None:
        fused = fuse_linears([self.q_proj, self.k_proj, self.v_proj])
        if fused is not None:
            self.qkv_proj = fused
            del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x, cos, sin, kv_cache, meta: AttentionMetadata, backend: AttentionBackend):
        h, kvh = self.num_heads, self.num_kv_heads
        if hasattr(self, "qkv_proj"):
            qkv = self.qkv_proj(x).view(-1, h + 2 * kvh, self.head_dim)
        else:
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1).view(-1, h + 2 * kvh, self.head_dim)
        v = qkv[:, h + kvh:]
        if hasattr(self, "q_norm"):
            qk = rotary(torch.cat([self.q_norm(qkv[:, :h]), self.k_norm(qkv[:, h:h + kvh])], 1), cos, sin)
        else:  # q and k heads are adjacent in qkv: one rotary launch for both
            qk = rotary(qkv[:, :h + kvh], cos, sin)
        out = backend.forward(qk[:, :h], qk[:, h:], v, kv_cache, meta, self.head_dim**-0.5)
        return self.o_proj(out.flatten(1))


class MLP(nn.Module):
    """SwiGLU MLP. After loading, ``fuse_gate_up`` merges gate_proj and up_proj into one gate_up_proj (one GEMM,
    then kernelkit's silu_and_mul), as vLLM's merged column linear, where the layer types allow it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def fuse_gate_up(self) -> None:
        fused = fuse_linears([self.gate_proj, self.up_proj])
        if fused is not None:  # other layer types keep two GEMMs
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
        """Merge layers that run faster together (q/k/v and gate/up projections); call after the weights are
        loaded."""
        for layer in self.model.layers:
            layer.self_attn.fuse_qkv()
            layer.mlp.fuse_gate_up()

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [N, vocab] for hidden states [N, hidden]."""
        return self.lm_head(hidden).float()
