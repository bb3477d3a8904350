"""The model description the engine needs, parsed from an HF ``config.json`` once the architecture registry
(``registry.py``) has named the architecture."""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedModel(ValueError):
    """An architecture or configuration the engine does not implement."""


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters: ``rope_type`` default, linear or llama3 (transformers' definitions)."""

    theta: float
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class MoeConfig:
    """The sparse MoE blocks of a decoder (Qwen3-MoE's config.json keys): E experts of intermediate size I, top-k
    softmax routing, renormalised when ``norm_topk_prob``; layer i is sparse unless it is in ``mlp_only_layers``,
    and only every ``decoder_sparse_step``-th layer is (transformers' ``Qwen3MoeDecoderLayer`` rule)."""

    num_experts: int
    top_k: int
    intermediate_size: int
    norm_topk_prob: bool
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    def is_sparse(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` (0-based) has a MoE block rather than a dense MLP."""
        return layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0

    @classmethod
    def from_hf(cls, cfg: dict) -> MoeConfig:
        """Raises UnsupportedModel when config.json names no experts or a top-k outside 1..E."""
        experts = cfg.get("num_experts") or cfg.get("num_local_experts")  # transformers 5 writes the latter
        top_k = cfg.get("num_experts_per_tok")
        if not experts or not top_k or not 1 <= top_k <= experts:
            raise UnsupportedModel(f"a MoE config needs num_experts >= num_experts_per_tok >= 1, got {experts} "
                                   f"and {top_k}")
        return cls(num_experts=experts, top_k=top_k, intermediate_size=cfg["moe_intermediate_size"],
                   norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                   decoder_sparse_step=cfg.get("decoder_sparse_step") or 1,
                   mlp_only_layers=tuple(cfg.get("mlp_only_layers") or ()))


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and switches of one decoder."""

    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    eos_token_ids: tuple[int, ...]
    quantization_config: dict | None
    moe: MoeConfig | None = None  # None: every layer has a dense MLP

    @classmethod
    def from_hf(cls, cfg: dict, arch: str, attention_bias: bool = False, qk_norm: bool = False,
                moe: bool = False) -> ModelConfig:
        """Parse config.json of architecture ``arch``; ``attention_bias``: the architecture's default when
        config.json does not say; ``qk_norm``: the architecture normalises q and k per head; ``moe``: it has
        sparse MoE blocks (:class:`MoeConfig`).

        Raises:
            UnsupportedModel: a setting the engine lacks (RoPE scaling, a MoE config without experts).
        """
        heads = cfg["num_attention_heads"]
        eos = cfg.get("eos_token_id")
        return cls(
            architecture=arch, hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"], num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, vocab_size=cfg["vocab_size"],
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6), rope=_rope(cfg),
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", attention_bias)), qk_norm=qk_norm,
            eos_token_ids=tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else (),
            quantization_config=cfg.get("quantization_config"), moe=MoeConfig.from_hf(cfg) if moe else None,
        )


def _rope(cfg: dict) -> RopeConfig:
    # transformers >= 5 writes rope_parameters (with rope_theta inside); older configs rope_theta + rope_scaling.
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "linear", "llama3"):
        raise UnsupportedModel(f"unsupported RoPE scaling {rope_type!r} (supported: default, linear, llama3)")
    fields = {k: params[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                     "original_max_position_embeddings") if k in params}
    return RopeConfig(theta=float(theta), rope_type=rope_type, **fields)
