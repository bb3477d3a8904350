"""``quantize_``: swap a model's ``nn.Linear`` layers for layers computing through a scheme's linear method,
in place. In the spirit of torchao's ``quantize_``: the model code does not change, only its linear modules.

Each ``nn.Linear`` the scheme quantizes becomes a ``ReplicatedLinear`` with the scheme's method; its float
weight goes through the scheme's own offline conversion (``convert_linear``) and the method's weight loaders,
exactly as a converted checkpoint would be read.
"""

from __future__ import annotations

import torch
from torch import nn

from kernelkit.layers import QuantContext, ReplicatedLinear, load_tensors
from kernelkit.quant.registry import get_scheme
from kernelkit.quant.scheme import QuantScheme


def resolve_scheme(scheme: str | QuantScheme, **options) -> QuantScheme:
    """A scheme instance from a registered name plus options, or the instance itself (options then forbidden).

    Raises:
        SchemeError: unknown or broken scheme name.
        TypeError: options given with a scheme instance, or options the scheme does not take.
    """
    if isinstance(scheme, QuantScheme):
        if options:
            raise TypeError(f"options {sorted(options)} go to the scheme's constructor, not with an instance")
        return scheme
    return get_scheme(scheme)(**options)


def _linears(model: nn.Module, scheme: QuantScheme):
    """(parent, child name, full name, linear) for every plain nn.Linear the scheme quantizes."""
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is nn.Linear and scheme.linear_method(full_name) is not None:
                yield parent, child_name, full_name, child


def replace_linears(model: nn.Module, scheme: QuantScheme, dtype: torch.dtype) -> nn.Module:
    """Put an empty ``ReplicatedLinear`` with the scheme's method in place of every nn.Linear it quantizes,
    on the linear's device, ready for a checkpoint the scheme wrote (``kernelkit.layers.load_checkpoint``).
    Returns ``model``."""
    quant = QuantContext(scheme)
    for parent, name, full_name, linear in _linears(model, scheme):
        with torch.device(linear.weight.device):
            layer = ReplicatedLinear(linear.in_features, linear.out_features, linear.bias is not None, quant=quant,
                                     prefix=full_name, params_dtype=dtype)
        setattr(parent, name, layer)
    return model


@torch.no_grad()
def quantize_(model: nn.Module, scheme: str | QuantScheme, **options) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` that the scheme quantizes with its quantized layer.

    Args:
        model: any PyTorch module; modified in place (and returned).
        scheme: a registered scheme name such as ``"fp8-block"``, or a QuantScheme instance.
        **options: constructor options of a named scheme, e.g. ``block_size=(128, 128)``,
            ``modules_to_not_convert=["lm_head"]``.

    Returns:
        ``model``.

    Raises:
        As :func:`resolve_scheme`.
    """
    quant = resolve_scheme(scheme, **options)
    context = QuantContext(quant)
    for parent, name, full_name, linear in _linears(model, quant):
        weight = linear.weight.detach()
        with torch.device(weight.device):
            layer = ReplicatedLinear(linear.in_features, linear.out_features, linear.bias is not None, quant=context,
                                     prefix=full_name, params_dtype=weight.dtype)
        tensors = quant.convert_linear(full_name, weight, None if linear.bias is None else linear.bias.detach())
        load_tensors(layer, ((suffix, t, f"nn.Linear {full_name}") for suffix, t in tensors.items()))
        setattr(parent, name, layer)
    return model
