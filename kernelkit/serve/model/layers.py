"""The decoder's shared blocks, composed from ``kernelkit.layers`` and kernelkit's fused ops: RMSNorm (with
the residual add fused), rotary self-attention over the paged KV cache (one qkv_proj), the SwiGLU MLP (one
gate_up_proj), the sparse MoE block (a router and one ``FusedMoE``) and the pre-norm decoder layer. Models are
compositions of these; none knows a scheme."""

from __future__ import annotations

import torch
from torch import nn

from kernelkit.layers import (
    FusedMoE,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    QuantContext,
    ReplicatedLinear,
    RowParallelLinear,
)
from kernelkit.ops.layers.ops import rms_norm, rotary, silu_and_mul
from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata
from kernelkit.serve.model.config import ModelConfig


class RMSNorm(nn.Module):
    """kernelkit's fused RMSNorm op; with a residual, adds it first and returns the sum too (vLLM's layout)."""

    def __init__(self, size: int, eps: float, dtype: torch.dtype | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        out, summed = rms_norm(x.reshape(-1, x.shape[-1]), self.weight, self.eps,
                               None if residual is None else residual.reshape(-1, x.shape[-1]))
        return out.view(x.shape) if residual is None else (out.view(x.shape), summed.view(x.shape))


class Attention(nn.Module):
    """Self-attention with GQA: one qkv_proj, optional q/k RMSNorm (Qwen3), one rotary launch, the backend. With
    tensor parallelism (``tp``: ``tp_rank``/``tp_size``) a rank attends with its share of the heads."""

    def __init__(self, cfg: ModelConfig, quant: QuantContext, prefix: str, dtype: torch.dtype, tp: dict):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.qkv_proj = QKVParallelLinear(h, d, cfg.num_heads, cfg.num_kv_heads, cfg.attention_bias, quant=quant,
                                          prefix=f"{prefix}.qkv_proj", params_dtype=dtype, **tp)
        self.num_heads, self.num_kv_heads, self.head_dim = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads, d
        self.o_proj = RowParallelLinear(cfg.num_heads * d, h, False, quant=quant, prefix=f"{prefix}.o_proj",
                                        params_dtype=dtype, **tp)
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(d, cfg.rms_norm_eps, dtype), RMSNorm(d, cfg.rms_norm_eps, dtype)

    def forward(self, x, cos, sin, kv_cache, meta: AttentionMetadata, backend: AttentionBackend):
        h, kvh = self.num_heads, self.num_kv_heads
        qkv = self.qkv_proj(x).view(-1, h + 2 * kvh, self.head_dim)
        v = qkv[:, h + kvh:]
        if hasattr(self, "q_norm"):
            qk = rotary(torch.cat([self.q_norm(qkv[:, :h]), self.k_norm(qkv[:, h:h + kvh])], 1), cos, sin)
        else:  # q and k heads are adjacent in qkv: one rotary launch for both
            qk = rotary(qkv[:, :h + kvh], cos, sin)
        out = backend.forward(qk[:, :h], qk[:, h:], v, kv_cache, meta, self.head_dim**-0.5)
        return self.o_proj(out.flatten(1))


class MLP(nn.Module):
    """SwiGLU: one gate_up_proj GEMM, kernelkit's silu_and_mul, the down_proj GEMM."""

    def __init__(self, cfg: ModelConfig, quant: QuantContext, prefix: str, dtype: torch.dtype, tp: dict):
        super().__init__()
        inter = cfg.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [inter, inter], False, quant=quant,
                                                       prefix=f"{prefix}.gate_up_proj", params_dtype=dtype, **tp)
        self.down_proj = RowParallelLinear(inter, cfg.hidden_size, False, quant=quant, prefix=f"{prefix}.down_proj",
                                           params_dtype=dtype, **tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class SparseMoeBlock(nn.Module):
    """Qwen3-MoE's block: the router ``gate`` [E, H] (always unquantized: routing decides which experts run, and
    no scheme's pattern for ``gate_proj`` may catch it), then top-k softmax routing and the experts of one
    ``FusedMoE`` (``mlp.experts``), whose method the scheme chooses."""

    def __init__(self, cfg: ModelConfig, quant: QuantContext, prefix: str, dtype: torch.dtype, tp: dict):
        super().__init__()
        moe = cfg.moe
        self.gate = ReplicatedLinear(cfg.hidden_size, moe.num_experts, False, prefix=f"{prefix}.gate",
                                     params_dtype=dtype)
        self.experts = FusedMoE(moe.num_experts, moe.top_k, cfg.hidden_size, moe.intermediate_size,
                                renormalize=moe.norm_topk_prob, quant=quant, prefix=f"{prefix}.experts",
                                params_dtype=dtype, **tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x, self.gate(x))


class DecoderLayer(nn.Module):
    """Pre-norm block; the residual stream travels beside the hidden states so each norm fuses its add. Layer
    ``index`` has a :class:`SparseMoeBlock` where the config's MoE settings make it sparse, else the MLP."""

    def __init__(self, cfg: ModelConfig, quant: QuantContext, prefix: str, dtype: torch.dtype, index: int = 0,
                 tp: dict | None = None):
        super().__init__()
        tp = tp or {}
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = Attention(cfg, quant, f"{prefix}.self_attn", dtype, tp)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        sparse = cfg.moe is not None and cfg.moe.is_sparse(index)
        self.mlp = (SparseMoeBlock if sparse else MLP)(cfg, quant, f"{prefix}.mlp", dtype, tp)

    def forward(self, x, residual, cos, sin, kv_cache, meta, backend):
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, cos, sin, kv_cache, meta, backend)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual
