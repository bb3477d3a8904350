"""Load an HF-format checkpoint (e.g. ``kernelkit convert`` output) into the engine's model: the class from
the architecture registry, built on the device with the layers the checkpoint's scheme gives them, then the
one checkpoint reader (``kernelkit.layers.loader``), shard by shard."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kernelkit.layers import (
    FusedMoE,
    LinearBase,
    UnquantizedLinearMethod,
    VocabParallelEmbedding,
    load_checkpoint,
    load_tensors,
)
from kernelkit.layers.moe import UnquantizedFusedMoEMethod
from kernelkit.quant import checkpoint_quantization_config, scheme_from_config
from kernelkit.serve.model import registry


def load_model(path: str | Path, dtype: torch.dtype, device: str | torch.device, load_format: str = "auto",
               tp_rank: int = 0, tp_size: int = 1):
    """The model of an HF model directory on ``device``, parameters in ``dtype`` (quantized ones as stored);
    with ``tp_size`` > 1, tensor-parallel rank ``tp_rank``'s share of it (every rank reads the whole checkpoint
    and keeps its share). ``load_format="dummy"`` fills random weights instead of reading tensors (see
    :func:`random_weights`).

    Raises:
        UnsupportedModel: an architecture or RoPE scaling the engine does not implement.
        SchemeError: a quantization_config no registered scheme reads.
        CheckpointMismatch: missing or unexpected tensors (named), or shapes and dtypes that do not fit.
        ValueError: an unknown load_format, or a model the ranks cannot split (the layer and the reason named).
    """
    if load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    path, device = Path(path), torch.device(device)
    model, scheme = build_model(path, dtype, device, tp_rank, tp_size)
    if load_format == "dummy":
        random_weights(model, scheme)
    else:
        load_checkpoint(model, path, device, model.checkpoint_rules())
    return model.eval()


def build_model(path: str | Path, dtype: torch.dtype, device: str | torch.device, tp_rank: int = 0,
                tp_size: int = 1):
    """(model, scheme): the model class of the HF directory ``path`` built on ``device`` with the layers its
    checkpoint's scheme gives them, weights not loaded. On the ``meta`` device this checks, for nothing, that
    rank ``tp_rank`` of ``tp_size`` can take its share. Raises as :func:`load_model` (not CheckpointMismatch)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model_class, cfg = registry.resolve(config)
    quantization_config = checkpoint_quantization_config(path, config)
    scheme = scheme_from_config(quantization_config) if quantization_config else None
    with torch.device(device):
        return model_class(cfg, scheme, dtype, tp_rank, tp_size), scheme


@torch.no_grad()
def random_weights(model, scheme, seed: int = 0) -> None:
    """N(0, 0.02) weights (norms at 1) in the checkpoint's own form: each part of each linear layer, and each
    projection of each expert of quantized experts, is drawn in float and converted by the scheme, as
    ``kernelkit convert`` would (vLLM's dummy format), so one part at a time is held in float. Tensors are drawn
    whole, in one order, so every tensor-parallel rank draws the same model and keeps its share. For benchmarks
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
                for prefix, shard in zip(module.checkpoint_prefixes, module.output_shards, strict=True):
                    size = shard.total
                    w = torch.randn(size, module.input_shard.total, dtype=module.params_dtype, device=device) * 0.02
                    out = scheme.convert_linear(prefix, w, None) if quantized else {"weight": w}
                    if module.bias is not None:
                        out["bias"] = torch.zeros(size, dtype=module.params_dtype, device=device)
                    yield from ((f"{prefix}.{suffix}", t, "dummy") for suffix, t in out.items())
        for name, param in model.named_parameters():
            owner = model.get_submodule(name.rpartition(".")[0])
            if not isinstance(owner, LinearBase) and owner not in quantized_moe:
                shape = (owner.num_embeddings, owner.embedding_dim) if isinstance(owner, VocabParallelEmbedding) \
                    else param.shape  # the whole vocabulary: each rank keeps its rows
                value = torch.ones(shape, dtype=param.dtype, device=param.device) if name.endswith("norm.weight") \
                    else torch.randn(shape, dtype=param.dtype, device=param.device) * 0.02
                yield name, value, "dummy"

    load_tensors(model, tensors(), model.checkpoint_rules())

