"""What ``kernelkit convert`` will do with each tensor, how big the output is, and how it is sharded.

Output shapes and dtypes of quantized layers come from running the scheme's ``convert_linear`` on meta
tensors, so a plan never needs a scheme-specific size formula.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import torch

from kernelkit.convert.sources import SourceTensor
from kernelkit.quant.scheme import QuantScheme


@dataclass(frozen=True)
class TensorPlan:
    """One source tensor: ``quantize`` (a linear weight), ``cast`` (other float tensors) or ``copy``."""

    source: SourceTensor
    action: str
    outputs: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]

    @property
    def out_bytes(self) -> int:
        return sum(torch.Size(shape).numel() * dtype.itemsize for _, shape, dtype in self.outputs)


@dataclass
class Plan:
    """The per-tensor plan, the output shards (lists of indices into ``tensors``), excluded modules and the
    shard files' stem (``model``; msModelSlim's ``quant_model_weights``)."""

    tensors: list[TensorPlan]
    shards: list[list[int]]
    not_converted: list[str] = field(default_factory=list)
    file_stem: str = "model"

    @property
    def out_bytes(self) -> int:
        return sum(t.out_bytes for t in self.tensors)

    @property
    def in_bytes(self) -> int:
        return sum(t.source.nbytes for t in self.tensors)

    def shard_name(self, i: int) -> str:
        """HF shard file names: model.safetensors, or model-0000i-of-0000n.safetensors (with the file stem)."""
        n = len(self.shards)
        return f"{self.file_stem}.safetensors" if n == 1 else f"{self.file_stem}-{i + 1:05d}-of-{n:05d}.safetensors"

    @property
    def index_name(self) -> str:
        """The sharded checkpoint's index file: model.safetensors.index.json (with the file stem)."""
        return f"{self.file_stem}.safetensors.index.json"

    def digest(self, options: dict) -> str:
        """Identifies this plan and its options, so ``--resume`` only continues the same conversion."""
        body = [(t.source.name, t.source.shape, str(t.source.dtype), t.action) for t in self.tensors]
        blob = json.dumps({"tensors": body, "shards": self.shards, "options": options}, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


# MoE routers (Qwen3-MoE's and Mixtral's ``mlp.gate``, DeepSeek's ``mlp.gate``) stay float: routing picks the
# experts, and sglang, vLLM and kernelkit's engine build them unquantized whatever the checkpoint's scheme.
ROUTER = re.compile(r"\.mlp\.gate$")


def _quantized(t: SourceTensor, scheme: QuantScheme | None, ignore: list[re.Pattern]) -> tuple[bool, str | None]:
    """(quantize?, module name if a linear weight was left out on purpose)."""
    if scheme is None or not t.name.endswith(".weight") or len(t.shape) != 2 or not t.dtype.is_floating_point:
        return False, None
    module = t.name[: -len(".weight")]
    if ROUTER.search(module) or not scheme.quantizes(module):
        return False, None
    if any(p.search(module) for p in ignore):
        return False, module
    return True, None


def linear_shapes(tensors: list[SourceTensor], scheme: QuantScheme, ignore: list[re.Pattern]
                  ) -> dict[str, tuple[int, int]]:
    """[N, K] of every linear layer the plan will quantize, by module name (what ``QuantScheme.fit`` sees)."""
    return {t.name[: -len(".weight")]: t.shape for t in tensors if _quantized(t, scheme, ignore)[0]}


def make_plan(tensors: list[SourceTensor], scheme: QuantScheme | None, dtype: torch.dtype,
              ignore: list[re.Pattern], max_shard_bytes: int) -> Plan:
    """Decide every tensor's action and outputs, then pack them into shards of at most ``max_shard_bytes``."""
    plans, not_converted = [], []
    for t in tensors:
        quantize, ignored_module = _quantized(t, scheme, ignore)
        if ignored_module:
            not_converted.append(ignored_module)
        if quantize:
            module = t.name[: -len(".weight")]
            meta = scheme.convert_linear(module, torch.empty(t.shape, dtype=dtype, device="meta"), None)
            outputs = tuple((f"{module}.{suffix}", tuple(v.shape), v.dtype) for suffix, v in meta.items())
            plans.append(TensorPlan(t, "quantize", outputs))
        elif t.dtype.is_floating_point:
            plans.append(TensorPlan(t, "cast", ((t.name, t.shape, dtype),)))
        else:
            plans.append(TensorPlan(t, "copy", ((t.name, t.shape, t.dtype),)))
    shards: list[list[int]] = [[]]
    size = 0
    for i, p in enumerate(plans):
        if shards[-1] and size + p.out_bytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(i)
        size += p.out_bytes
    return Plan(plans, shards, not_converted, scheme.file_stem if scheme is not None else "model")
