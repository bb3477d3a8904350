"""The one checkpoint reader: HF safetensors into any model built from this package's layers (the engine's
models) or from plain torch modules (a transformers model for ``kernelkit eval``), shard by shard, each
tensor straight onto the device.

Each checkpoint tensor goes to the parameter of the same name, through that parameter's ``weight_loader``
(``default_weight_loader`` if it has none). Merged parameters are reached through rename rules
``(checkpoint fragment, parameter fragment, shard_id)``, as vLLM's ``stacked_params_mapping``: with
``(".k_proj.", ".qkv_proj.", 1)``, ``...self_attn.k_proj.weight_scale_inv`` loads into shard 1 of
``...self_attn.qkv_proj.weight_scale_inv``. Afterwards every layer's method runs
``process_weights_after_loading`` once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from kernelkit.layers.base import default_weight_loader

Rule = tuple[str, str, object]


class CheckpointMismatch(ValueError):
    """The checkpoint's tensors are not the ones the model has: names of missing or unexpected tensors, or a
    tensor whose shape or dtype does not fit, with the file it comes from."""


def packed_rules(packed_modules_mapping: Mapping[str, Sequence[str]]) -> list[Rule]:
    """Rename rules for a model's ``packed_modules_mapping``: part i of a merged module is shard i."""
    return [(f".{part}.", f".{merged}.", i) for merged, parts in packed_modules_mapping.items()
            for i, part in enumerate(parts)]


def _float_dtypes(*dtypes: torch.dtype) -> bool:
    return all(d.is_floating_point and d.itemsize >= 2 for d in dtypes)


def load_tensors(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor, str]], rules: Sequence[Rule] = (),
                 ignore: Sequence[str] = ()) -> None:
    """Place ``(name, tensor, origin)`` triples into ``model``, then run every layer's
    ``process_weights_after_loading``.

    Float tensors may change precision on the way (a bf16 checkpoint into an fp32 model); any other dtype
    must match (an fp8 or int8 tensor is never cast, nor a float one into a quantized parameter).

    Args:
        rules: rename rules of merged parameters (see the module docstring).
        ignore: checkpoint names to skip (e.g. ``lm_head.weight`` of a model that ties it).

    Raises:
        CheckpointMismatch: unexpected or missing tensors (named, the first eight), or a tensor that does not
            fit its parameter (named, with its origin).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    canonical = {id(p): name for name, p in reversed(list(params.items()))}  # a tied parameter's first name
    needed = _needed_shards(params, canonical, rules)
    loaded: dict[str, set] = {}
    unexpected = []
    for name, tensor, origin in tensors:
        if name in ignore:
            continue
        target, shard_id = _rename(name, rules)
        param = params.get(target)
        if param is None:
            unexpected.append(name)
            continue
        if param.dtype != tensor.dtype and not _float_dtypes(param.dtype, tensor.dtype):
            raise CheckpointMismatch(f"{origin}: tensor {name} is {tensor.dtype}, the model's {target} is "
                                     f"{param.dtype}")
        try:
            getattr(param, "weight_loader", default_weight_loader)(param, tensor, shard_id)
        except ValueError as e:
            raise CheckpointMismatch(f"{origin}: tensor {name} does not fit {target}: {e}") from e
        loaded.setdefault(canonical[id(param)], set()).add(shard_id)
    if unexpected:
        raise CheckpointMismatch(f"tensors the model does not have: {sorted(unexpected)[:8]}"
                                 + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""))
    missing = [_checkpoint_name(name, sid, rules) for name, shards in needed.items()
               for sid in sorted(shards - loaded.get(name, set()), key=repr) if None not in loaded.get(name, ())]
    if missing:
        raise CheckpointMismatch(f"missing tensors {sorted(missing)[:8]}"
                                 + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(module)


def _rename(name: str, rules: Sequence[Rule]) -> tuple[str, object]:
    for checkpoint, parameter, shard_id in rules:
        if checkpoint in name:
            return name.replace(checkpoint, parameter, 1), shard_id
    return name, None


def _checkpoint_name(name: str, shard_id, rules: Sequence[Rule]) -> str:
    for checkpoint, parameter, sid in rules:
        if sid == shard_id and parameter in name:
            return name.replace(parameter, checkpoint, 1)
    return name


def _needed_shards(params: dict[str, nn.Parameter], canonical: dict[int, str], rules: Sequence[Rule]
                   ) -> dict[str, set]:
    """Per parameter (by its first name): the shard ids the checkpoint must fill ({None}: the whole)."""
    needed = {}
    for name, param in params.items():
        if canonical[id(param)] != name:
            continue
        shards = {sid for _, fragment, sid in rules if fragment in name}
        needed[name] = shards or {None}
    return needed


def _safetensors(path: Path, device: torch.device) -> Iterator[tuple[str, torch.Tensor, str]]:
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatch(f"{path}: no *.safetensors files")
    for file in files:
        with safe_open(str(file), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name), str(file)


def load_checkpoint(model: nn.Module, path: str | Path, device: str | torch.device, rules: Sequence[Rule] = (),
                    ignore: Sequence[str] = ()) -> nn.Module:
    """Read every ``*.safetensors`` file of the HF model directory ``path`` into ``model`` (whose parameters
    live on ``device``), one tensor at a time; see :func:`load_tensors`. Returns ``model``.

    Raises:
        CheckpointMismatch: as :func:`load_tensors`, or no safetensors files.
    """
    load_tensors(model, _safetensors(Path(path), torch.device(device)), rules, ignore)
    return model
