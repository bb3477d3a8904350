"""Load an HF-format checkpoint (e.g. ``kernelkit convert`` output) into the engine's model: the class from
the architecture registry, built on the device with the layers the checkpoint's scheme gives them, then the
one checkpoint reader (``kernelkit.layers.loader``), shard by shard."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kernelkit.layers import FusedMoE, LinearBase, UnquantizedLinearMethod, load_checkpoint, load_tensors
from kernelkit.layers.moe import UnquantizedFusedMoEMethod
from kernelkit.quant import checkpoint_quantization_config, scheme_from_config
from kernelkit.serve.model import registry


def load_model(path: str | Path, dtype: torch.dtype, device: str | torch.device, load_format: str = "auto"):
    """The model of an HF model directory on ``device``, parameters in ``dtype`` (quantized ones as stored).
    ``load_format="dummy"`` fills random weights instead of reading tensors (see :func:`random_weights`).

    Raises:
        UnsupportedModel: an architecture or RoPE scaling the engine does not implement.
        SchemeError: a quantization_config no registered scheme reads.
        CheckpointMismatch: missing or unexpected tensors (named), or shapes and dtypes that do not fit.
        ValueError: an unknown load_format.
    """
    if load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    path, device = Path(path), torch.device(device)
    config = json.loads((path / "config.json").read_text())
    model_class, cfg = registry.resolve(config)
    quantization_config = checkpoint_quantization_config(path, config)
    scheme = scheme_from_config(quantization_config) if quantization_config else None
    with torch.device(device):
        model = model_class(cfg, scheme, dtype)
    if load_format == "dummy":
        random_weights(model, scheme)
    else:
        load_checkpoint(model, path, device, model.checkpoint_rules())
    return model.eval()


@torch.no_grad()
def random_weights(model, scheme, seed: int = 0) -> None:
    """N(0, 0.02) weights (norms at 1) in the checkpoint's own form: each part of each linear layer, and each
    projection of each expert of quantized experts, is drawn in float and converted by the scheme, as
    ``kernelkit convert`` would (vLLM's dummy format), so one part at a time is held in float. For benchmarks
    on real shapes without a checkpoint."""
    torch.manual_seed(seed)

    def expert_tensors(moe):
        device = moe.w13_weight.device
        h, i = moe.hidden_size, moe.intermediate_size
        for e in range(moe.num_experts):
            for part, shape in (("gate_proj", (i, h)), ("up_proj", (i, h)), ("down_proj", (h, i))):
                prefix = f"{moe.prefix}.{e}.{part}"
                w = torch.randn(shape, dtype=torch.get_default_dtype(), device=device) * 0.02
                yield from ((f"{prefix}.{suffix}", t, "dummy") for suffix, t in scheme.convert_linear(prefix, w,
                                                                                                     None).items())

    def tensors():
        quantized_moe = [m for m in model.modules() if isinstance(m, FusedMoE)
                         and not isinstance(m.quant_method, UnquantizedFusedMoEMethod)]
        for moe in quantized_moe:
            yield from expert_tensors(moe)
        for module in model.modules():
            if isinstance(module, LinearBase):
                quantized = not isinstance(module.quant_method, UnquantizedLinearMethod)
                device = next(module.parameters()).device
                for prefix, size in zip(module.checkpoint_prefixes, module.output_partition_sizes, strict=True):
                    w = torch.randn(size, module.input_size, dtype=module.params_dtype, device=device) * 0.02
                    out = scheme.convert_linear(prefix, w, None) if quantized else {"weight": w}
                    if module.bias is not None:
                        out["bias"] = torch.zeros(size, dtype=module.params_dtype, device=device)
                    yield from ((f"{prefix}.{suffix}", t, "dummy") for suffix, t in out.items())
        for name, param in model.named_parameters():
            owner = model.get_submodule(name.rpartition(".")[0])
            if not isinstance(owner, LinearBase) and owner not in quantized_moe:
                value = torch.ones_like(param) if name.endswith("norm.weight") else torch.randn_like(param) * 0.02
                yield name, value, "dummy"

    load_tensors(model, tensors(), model.checkpoint_rules())

