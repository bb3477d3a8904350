"""The interface every quantization scheme implements, built-in or plugin.

A scheme is one class, registered by name in the entry-point group ``kernelkit.quant``. It covers the whole
life of a quantized checkpoint:

- its HF ``quantization_config`` (``from_config`` / ``to_config``), with the keys its ecosystem expects;
- which modules it quantizes (``quantizes``; ``modules_to_not_convert`` patterns, substring match as in
  sglang, vLLM and transformers; default: lm_head and embeddings; norms are never linear layers);
- offline conversion of one linear layer's tensors (``convert_linear``) after adapting to the model's shapes
  (``fit``), plus any extra files the format has
  (``extra_files``: ModelSlim's ``quant_model_description.json``);
- calibration for schemes that need activations (``calibrate_layer``, one decoder layer at a time: AWQ scales
  and clipping, SVDQuant smoothing), whose adapted weights ``convert_linear`` then quantizes;
- at run time, a method per layer (``linear_method``, ``moe_method``: ``kernelkit.layers.LinearMethod``,
  ``MoEMethod``): the layer's parameters under the checkpoint's names with their weight loaders, a repack step
  after loading, and the computation. The engine's models, ``kernelkit eval`` and ``quantize_`` all build their
  quantized layers from these methods, so a scheme never touches model code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from kernelkit.layers.base import LinearMethod, MoEMethod

DEFAULT_MODULES_TO_NOT_CONVERT = ("lm_head", "embed_tokens")


class QuantScheme(ABC):
    """Base class of quantization schemes. Subclasses set ``name`` and ``quant_method``."""

    name: ClassVar[str]
    quant_method: ClassVar[str]
    needs_calibration: ClassVar[bool] = False
    description_file: ClassVar[str | None] = None  # a format that describes itself in a file beside config.json
    file_stem: ClassVar[str] = "model"  # its safetensors files: model.safetensors, model-00001-of-00002...

    @classmethod
    def config_from_checkpoint(cls, path) -> dict:
        """For schemes with a ``description_file``: the quantization_config read from the checkpoint directory
        ``path`` that holds it (msModelSlim's checkpoints have no ``quantization_config``)."""
        raise NotImplementedError(f"{cls.name} is read from config.json's quantization_config")

    def __init__(self, modules_to_not_convert: Sequence[str] | None = None):
        self.modules_to_not_convert = list(
            DEFAULT_MODULES_TO_NOT_CONVERT if modules_to_not_convert is None else modules_to_not_convert)

    @classmethod
    @abstractmethod
    def from_config(cls, quantization_config: dict) -> QuantScheme:
        """Build the scheme from an HF ``quantization_config``. Raises ValueError naming a bad or unsupported key."""

    @abstractmethod
    def to_config(self) -> dict:
        """The HF ``quantization_config`` this scheme writes into ``config.json`` (a scheme with a
        ``description_file`` is described by that file instead, and this config only names its options)."""

    def quantizes(self, module_name: str) -> bool:
        """Whether the linear layer ``module_name`` (e.g. ``model.layers.0.mlp.down_proj``) is quantized."""
        return not any(pattern in module_name for pattern in self.modules_to_not_convert)

    def fit(self, linear_shapes: Mapping[str, tuple[int, int]]) -> QuantScheme:
        """The scheme ``kernelkit convert`` uses for a model whose quantized linear layers have these [N, K]
        shapes (by module name): a scheme may pick block or group sizes that divide them, and log why. Default:
        itself."""
        return self

    @abstractmethod
    def convert_linear(self, prefix: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Quantize one linear layer. ``weight`` [N, K] float; returns the layer's checkpoint tensors by suffix
        (``{"weight": ..., "weight_scale_inv": ...}``), which the caller stores as ``f"{prefix}.{suffix}"``."""

    def calibrate_layer(self, layer: nn.Module, run: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                        x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Adapt one float decoder layer (transformers modules) to its calibration inputs ``x`` [samples, seqlen,
        hidden] (schemes with ``needs_calibration``; ``kernelkit.convert.calibration`` calls it layer by layer).
        ``run(module, x)`` runs the layer or one of its submodules. Returns the tensors to write instead of the
        source's, by name within the layer, and leaves the layer computing as the checkpoint will."""
        raise NotImplementedError(f"{self.name} needs no calibration")

    def extra_files(self, outputs: Mapping[str, bool]) -> dict[str, str]:
        """Files besides config.json and the tensors that the format requires, by name. ``outputs``: every
        tensor the converted checkpoint holds -> whether ``convert_linear`` wrote it (a quantized layer's)."""
        return {}

    @abstractmethod
    def linear_method(self, prefix: str) -> LinearMethod | None:
        """The method of the checkpoint's linear module ``prefix`` (e.g. ``model.layers.0.self_attn.q_proj``),
        or None to keep it unquantized (``modules_to_not_convert``; per-module formats decide here). A merged
        layer asks for each of its parts and needs equal methods for them."""

    def moe_method(self, prefix: str) -> MoEMethod | None:
        """The method of the FusedMoE layer ``prefix`` (e.g. ``model.layers.0.mlp.experts``); None: unquantized
        experts (default, until a scheme has MoE kernels)."""
        return None
