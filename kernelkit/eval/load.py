"""Load an HF-format checkpoint (e.g. a ``kernelkit convert`` output) into transformers' modeling code, with
kernelkit's runtime layers for quantized linears. For evaluation and reference runs; needs ``transformers``.

A quantized checkpoint is recognised by its ``quantization_config``; the scheme comes from the registry
(``scheme_from_config``) and replaces every linear layer it quantizes with ``empty_linear`` before the
checkpoint's tensors are loaded, strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kernelkit.quant import prepare_for_checkpoint, scheme_from_config


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors files."""
    from safetensors.torch import load_file

    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> nn.Module:
    """The transformers causal LM of an HF model directory, in eval mode (tokenizer: ``AutoTokenizer``).

    Raises:
        SchemeError: the quantization_config names no registered scheme.
        ValueError: the checkpoint's tensors do not match the model the config describes (names listed).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers would apply its own quantizer otherwise
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if raw.get("quantization_config"):
        prepare_for_checkpoint(model, scheme_from_config(raw["quantization_config"]), dtype)
    state = read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    if tied:
        model.tie_weights()
    return model.to(device).eval()
