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


def expected_shapes(config: dict) -> list[tuple[re.Pattern, tuple[int, ...]]]:
    """(name pattern, shape) pairs implied by a llama-family config.json; empty for other architectures."""
    if config.get("model_type") not in LLAMA_FAMILY:
        return []
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
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


def check_shapes(config: dict, tensors: list[SourceTensor]) -> None:
    """Raises ConvertError for the first tensor whose shape disagrees with config.json."""
    rules = expected_shapes(config)
    for t in tensors:
        for pattern, shape in rules:
            if pattern.match(t.name) and t.shape != shape:
                raise ConvertError(f"{t.origin}: tensor {t.name} has shape {list(t.shape)} but config.json implies "
                                   f"{list(shape)}")


def check_finite(t: SourceTensor, data: torch.Tensor, first_row: int = 0) -> None:
    """Raises ConvertError if float rows of ``t`` (``data``, starting at ``first_row``) hold NaN or Inf
    (``--allow-nonfinite`` skips this)."""
    if data.is_floating_point() and not torch.isfinite(data).all():
        bad = (~torch.isfinite(data)).sum().item()
        rows = f" in rows {first_row}..{first_row + data.shape[0] - 1}" if data.dim() else ""
        raise ConvertError(f"{t.origin}: tensor {t.name} has {bad} NaN/Inf values{rows} (pass --allow-nonfinite "
                           "to keep them)")
