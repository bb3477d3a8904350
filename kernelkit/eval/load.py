"""Load an HF-format checkpoint (e.g. a ``kernelkit convert`` output) into transformers' modeling code, with
the checkpoint's scheme's layers in place of the linears it quantizes (``replace_linears``), through the same
checkpoint reader as the engine (``kernelkit.layers.load_checkpoint``). For evaluation and reference runs;
needs ``transformers``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kernelkit.layers import load_checkpoint
from kernelkit.quant import checkpoint_quantization_config, replace_linears, scheme_from_config


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
        CheckpointMismatch: the checkpoint's tensors do not match the model the config describes (named).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers would apply its own quantizer otherwise
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    quantization_config = checkpoint_quantization_config(path, raw)
    if quantization_config:
        replace_linears(model, scheme_from_config(quantization_config), dtype)
    return load_checkpoint(model, path, device).eval()
