"""The architecture registry: config.json's ``architectures`` entry -> the engine's model class, with the
switches the architecture implies. A new model family is one file of compositions of ``layers.py`` plus one
line here."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kernelkit.serve.model.config import ModelConfig, UnsupportedModel
from kernelkit.serve.model.llama import LlamaForCausalLM


@dataclass(frozen=True)
class Architecture:
    """A model class and the defaults config.json leaves implicit for it."""

    model_class: type[nn.Module]
    model_type: str
    attention_bias: bool = False  # q/k/v bias when config.json has no attention_bias
    qk_norm: bool = False  # RMSNorm of q and k per head (Qwen3)
    moe: bool = False  # sparse MoE blocks (config.json's num_experts, moe_intermediate_size, ...)


ARCHITECTURES = {
    "LlamaForCausalLM": Architecture(LlamaForCausalLM, "llama"),
    "MistralForCausalLM": Architecture(LlamaForCausalLM, "mistral"),
    "Qwen2ForCausalLM": Architecture(LlamaForCausalLM, "qwen2", attention_bias=True),
    "Qwen3ForCausalLM": Architecture(LlamaForCausalLM, "qwen3", qk_norm=True),
    "Qwen3MoeForCausalLM": Architecture(LlamaForCausalLM, "qwen3_moe", qk_norm=True, moe=True),
}


def resolve(config: dict) -> tuple[type[nn.Module], ModelConfig]:
    """The model class and parsed config of an HF config.json: by its ``architectures`` entry, or by
    ``model_type`` where it has none.

    Raises:
        UnsupportedModel: an architecture not registered (named, with the supported ones listed), or a
            setting the engine lacks.
    """
    names = config.get("architectures") or []
    name = next((n for n in names if n in ARCHITECTURES), None)
    if name is None and not names:
        name = next((n for n, a in ARCHITECTURES.items() if a.model_type == config.get("model_type")), None)
    if name is None:
        raise UnsupportedModel(f"unsupported architecture {names or config.get('model_type')!r}; supported: "
                               f"{sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    return arch.model_class, ModelConfig.from_hf(config, name, arch.attention_bias, arch.qk_norm, arch.moe)
