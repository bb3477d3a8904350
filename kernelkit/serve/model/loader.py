"""Load an HF-format checkpoint (e.g. ``kernelkit convert`` output) into the engine's model, shard by shard,
straight onto the target device. A ``quantization_config`` selects the scheme from the registry, whose runtime
layers replace the linears it quantizes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kernelkit.quant import prepare_for_checkpoint, scheme_from_config
from kernelkit.serve.model.config import ModelConfig
from kernelkit.serve.model.llama import LlamaForCausalLM


class CheckpointMismatch(ValueError):
    """The checkpoint's tensors are not the ones the config describes."""


def load_model(path: str | Path, dtype: torch.dtype, device: str | torch.device,
               load_format: str = "auto") -> LlamaForCausalLM:
    """The model of an HF model directory on ``device``, parameters in ``dtype`` (quantized ones as stored).
    ``load_format="dummy"`` fills random weights instead of reading tensors (see :func:`random_weights`).

    Raises:
        UnsupportedModel: an architecture or RoPE scaling the engine does not implement.
        SchemeError: a quantization_config no registered scheme reads.
        CheckpointMismatch: missing or unexpected tensors (named), or wrong shapes.
    """
    from safetensors.torch import load_file

    path, device = Path(path), torch.device(device)
    cfg = ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
    if load_format == "dummy":
        return random_weights(cfg, dtype, device)
    if load_format != "auto":
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(dtype)
        if cfg.quantization_config:
            prepare_for_checkpoint(model, scheme_from_config(cfg.quantization_config), dtype)
    model = model.to_empty(device=device)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    expected = set(model.state_dict()) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    loaded: set[str] = set()
    for shard in sorted(path.glob("*.safetensors")):
        tensors = load_file(str(shard), device=str(device))
        unexpected = set(tensors) - expected
        if unexpected:
            raise CheckpointMismatch(f"{shard}: tensors the model does not have: {sorted(unexpected)[:8]}")
        try:
            model.load_state_dict(tensors, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise CheckpointMismatch(f"{shard}: {e}") from e
        loaded |= set(tensors)
    if expected - loaded:
        raise CheckpointMismatch(f"{path}: missing tensors {sorted(expected - loaded)[:8]}")
    model.fuse()
    return model.eval()


@torch.no_grad()
def random_weights(cfg: ModelConfig, dtype: torch.dtype, device: torch.device, seed: int = 0) -> LlamaForCausalLM:
    """A model with N(0, 0.02) weights (norms at 1), built on ``device`` in ``dtype``; then the linears the
    config's scheme quantizes are quantized from those weights (peak memory: the whole model in ``dtype``)."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(dtype)
    model = model.to_empty(device=device)
    for name, param in model.named_parameters():
        param.fill_(1.0) if name.endswith("norm.weight") else param.normal_(0, 0.02)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if cfg.quantization_config:
        from kernelkit.quant import quantize_

        quantize_(model, scheme_from_config(cfg.quantization_config))
    model.fuse()
    return model.eval()
