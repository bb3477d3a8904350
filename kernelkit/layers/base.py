"""The methods a scheme gives its layers, and how checkpoint tensors find their place in them.

Names and steps are vLLM's (``LinearMethodBase``, ``FusedMoEMethodBase``): ``create_weights`` registers a
layer's parameters under their checkpoint names and gives each a ``weight_loader(param, loaded_weight,
shard_id=None)``; the one checkpoint reader (``loader.py``) calls those loaders; then
``process_weights_after_loading`` runs once per layer (repacking, layout conversion); ``apply`` computes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn


class LinearMethod(ABC):
    """How one linear layer stores and applies its weights. Methods should compare equal when they would
    store and compute alike (dataclasses do): a merged layer's parts must agree on one method."""

    @abstractmethod
    def create_weights(self, layer: nn.Module, input_size: int, output_partition_sizes: list[int],
                       params_dtype: torch.dtype) -> None:
        """Register the layer's parameters (checkpoint names, each with a ``weight_loader``).

        Args:
            input_size: K.
            output_partition_sizes: N of each part of a merged layer (q, k, v; gate, up), or ``[N]``.
            params_dtype: the dtype of activations and of unquantized parameters.
        """

    def process_weights_after_loading(self, layer: nn.Module) -> None:  # noqa: B027 (optional step)
        """Repack or convert the loaded parameters once, after every checkpoint tensor was placed."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """y [..., sum(output_partition_sizes)] for x [..., input_size]."""


class MoEMethod(ABC):
    """How a FusedMoE layer stores and applies its stacked expert weights (vLLM's names: ``w13_*`` [E, 2I, H]
    for gate and up, ``w2_*`` [E, H, I] for down)."""

    @abstractmethod
    def create_weights(self, layer: nn.Module, num_experts: int, hidden_size: int, intermediate_size: int,
                       params_dtype: torch.dtype) -> None:
        """Register the stacked expert parameters, each with a ``weight_loader(param, w, shard_id=(expert, j))``
        (j: 0 gate, 1 up for ``w13_*``; 0 for ``w2_*``)."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:  # noqa: B027 (optional step)
        """Repack or convert the loaded expert parameters once."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor) -> torch.Tensor:
        """sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(x[t]) for x [T, H]: [T, H]."""


def set_weight_attrs(param: nn.Parameter, **attrs) -> nn.Parameter:
    """Attach loader attributes to a parameter (``weight_loader``, ...); returns it."""
    for key, value in attrs.items():
        setattr(param, key, value)
    return param


def default_weight_loader(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
    """Copy a whole tensor into a parameter of the same shape. Raises ValueError on a shape mismatch or a
    shard id (the parameter is not merged)."""
    if shard_id is not None:
        raise ValueError(f"a parameter of shape {list(param.shape)} has no shards, got shard {shard_id!r}")
    if tuple(param.shape) != tuple(loaded_weight.shape):
        raise ValueError(f"shape {list(loaded_weight.shape)} does not fit the parameter's {list(param.shape)}")
    param.data.copy_(loaded_weight)


def partitioned_loader(sizes: Sequence[int], dim: int = 0, divisor: int = 1, exact: bool = False) -> Callable:
    """A ``weight_loader`` for a parameter that stacks the parts of a merged layer along ``dim``: part i
    (``shard_id`` i) holds ceil(sizes[i] / divisor) entries there (divisor: block rows of block scales, or
    values packed into one entry; ``exact`` requires it to divide). Without a shard id the tensor must fill
    the whole parameter."""
    if exact and any(s % divisor for s in sizes):
        raise ValueError(f"part sizes {list(sizes)} are not multiples of {divisor}")
    extents = [-(-s // divisor) for s in sizes]
    offsets = [sum(extents[:i]) for i in range(len(extents))]

    def load(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        if shard_id is None:
            return default_weight_loader(param, loaded_weight)
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(sizes):
            raise ValueError(f"shard {shard_id!r} out of range for {len(sizes)} parts")
        target = param.data.narrow(dim, offsets[shard_id], extents[shard_id])
        if tuple(target.shape) != tuple(loaded_weight.shape):
            raise ValueError(f"part {shard_id} has shape {list(loaded_weight.shape)}, expected {list(target.shape)}")
        target.copy_(loaded_weight)

    return load


class MethodSource(Protocol):
    """What layers need of a quantization scheme (``kernelkit.quant.QuantScheme`` is one): a method per layer."""

    def linear_method(self, prefix: str) -> LinearMethod | None: ...

    def moe_method(self, prefix: str) -> MoEMethod | None: ...


@dataclass(frozen=True)
class QuantContext:
    """What layers need to choose their methods: the checkpoint's scheme (None: unquantized) and the model's
    ``packed_modules_mapping`` (merged module -> the checkpoint modules it merges, vLLM's form:
    ``{"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}``)."""

    scheme: MethodSource | None = None
    packed_modules_mapping: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def checkpoint_prefixes(self, prefix: str) -> list[str]:
        """The checkpoint modules behind the layer ``prefix``: its parts if it is merged, else itself."""
        head, _, last = prefix.rpartition(".")
        parts = self.packed_modules_mapping.get(last)
        return [f"{head}.{p}" if head else p for p in parts] if parts else [prefix]

    def linear_method(self, prefix: str) -> LinearMethod | None:
        """The scheme's method for the linear layer ``prefix`` (None: unquantized). A merged layer's parts
        must get equal methods. Raises ValueError naming the parts if they do not."""
        if self.scheme is None:
            return None
        parts = self.checkpoint_prefixes(prefix)
        methods = [self.scheme.linear_method(p) for p in parts]
        if any(m != methods[0] for m in methods[1:]):
            raise ValueError(f"{prefix}: the parts {parts} are quantized differently ({methods}); they cannot "
                             "share one merged layer")
        return methods[0]

    def moe_method(self, prefix: str) -> MoEMethod | None:
        """The scheme's method for the FusedMoE layer ``prefix`` (None: unquantized)."""
        return None if self.scheme is None else self.scheme.moe_method(prefix)
