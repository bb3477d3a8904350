"""Input checks of ``kernelkit convert``: already-quantized inputs, shapes against config.json, non-finite
weights. Every error names the tensor and the file."""

from __future__ import annotations

import re

import torch

from kernelkit.convert.errors import ConvertError
from kernelkit.convert.sources import SourceTensor

QUANTIZED_SUFFIXES = ("weight_scale_inv", "weight_scale", "qweight", "qzeros", "scales", "wscales")
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")


def check_not_quantized(config: dict, tensors: list[SourceTensor]) -> None:
    """Raises ConvertError if config.json or the tensors show the input is already quantized."""
    qc = config.get("quantization_config")
    if qc:
        raise ConvertError(f"the input is already quantized (config.json quantization_config: "
                           f"quant_method={qc.get('quant_method')!r}); convert from the original checkpoint")
    for t in tensors:
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or t.name.rsplit(".", 1)[-1] in QUANTIZED_SUFFIXES:
            raise ConvertError(f"{t.origin}: tensor {t.name} ({t.dtype}) looks already quantized")


REQUIRED_KEYS = ("hidden_size", "intermediate_size", "vocab_size", "num_attention_heads", "num_hidden_layers")


def expected_shapes(config: dict) -> list[tuple[re.Pattern, tuple[int, ...]]]:
    """(name pattern, shape) pairs implied by a llama-family config.json; empty for other architectures.

    Raises:
        ConvertError: a key the shapes depend on is missing or not a positive integer.
    """
    if config.get("model_type") not in LLAMA_FAMILY:
        return []
    for key in REQUIRED_KEYS + tuple(k for k in ("num_key_value_heads", "head_dim") if config.get(k) is not None):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConvertError(f"config.json: {key!r} must be a positive integer for a {config['model_type']} model, "
                               f"got {value!r}")
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    layer = r"model\.layers\.\d+\."
    rows = {
        r"model\.embed_tokens\.weight": (vocab, h),
        r"lm_head\.weight": (vocab, h),
        r"model\.norm\.weight": (h,),
        layer + r"(input|post_attention)_layernorm\.weight": (h,),
        layer + r"self_attn\.q_proj\.weight": (heads * head_dim, h),
        layer + r"self_attn\.[kv]_proj\.weight": (kv_heads * head_dim, h),
        layer + r"self_attn\.o_proj\.weight": (h, heads * head_dim),
        layer + r"mlp\.(gate|up)_proj\.weight": (inter, h),
        layer + r"mlp\.down_proj\.weight": (h, inter),
    }
    return [(re.compile(pattern + "$"), shape) for pattern, shape in rows.items()]


def expected_names(config: dict) -> set[str]:
    """The tensors a llama-family checkpoint must have, by config.json (every layer's projections and norms,
    the embeddings, the final norm, and lm_head unless tied); empty for other architectures."""
    if config.get("model_type") not in LLAMA_FAMILY:
        return set()
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config.get("tie_word_embeddings", False):
        names.add("lm_head.weight")
    parts = ["input_layernorm", "post_attention_layernorm", *(f"self_attn.{p}_proj" for p in "qkvo"),
             *(f"mlp.{p}_proj" for p in ("gate", "up", "down"))]
    return names | {f"model.layers.{i}.{part}.weight" for i in range(config["num_hidden_layers"]) for part in parts}


def check_shapes(config: dict, tensors: list[SourceTensor]) -> None:
    """Raises ConvertError for the first tensor whose shape disagrees with config.json, for tensors config.json
    needs that the checkpoint lacks, and for layers beyond ``num_hidden_layers``: a checkpoint that no loader
    could read is refused before anything is written."""
    rules = expected_shapes(config)
    for t in tensors:
        for pattern, shape in rules:
            if pattern.match(t.name) and t.shape != shape:
                raise ConvertError(f"{t.origin}: tensor {t.name} has shape {list(t.shape)} but config.json implies "
                                   f"{list(shape)}")
    if not rules:
        return
    names = {t.name for t in tensors}
    missing = sorted(expected_names(config) - names, key=_natural)
    if missing:
        raise ConvertError(f"config.json describes tensors the checkpoint does not have: {len(missing)} missing, "
                           f"e.g. {missing[:4]} (num_hidden_layers={config['num_hidden_layers']})")
    layers = {int(m.group(1)) for n in names if (m := re.match(r"model\.layers\.(\d+)\.", n))}
    extra = sorted(i for i in layers if i >= config["num_hidden_layers"])
    if extra:
        raise ConvertError(f"the checkpoint has layers {extra[0]}..{extra[-1]} beyond config.json's "
                           f"num_hidden_layers={config['num_hidden_layers']}")


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def check_finite(t: SourceTensor, data: torch.Tensor, first_row: int = 0) -> None:
    """Raises ConvertError if float rows of ``t`` (``data``, starting at ``first_row``) hold NaN or Inf
    (``--allow-nonfinite`` skips this)."""
    if data.is_floating_point() and not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).sum().item()
        rows = f" in rows {first_row}..{first_row + data.shape[0] - 1}" if data.dim() else ""
        raise ConvertError(f"{t.origin}: tensor {t.name} has {bad} NaN/Inf values{rows} (pass --allow-nonfinite "
                           "to keep them)")
