"""``quantize_``: swap a model's ``nn.Linear`` layers for a scheme's runtime layers, in place.

In the spirit of torchao's ``quantize_``: the model code does not change; only its linear modules do.
"""

from __future__ import annotations

from torch import nn

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
    """(parent, child name, linear) for every plain nn.Linear the scheme quantizes."""
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is nn.Linear and scheme.quantizes(full_name):
                yield parent, child_name, child


def prepare_for_checkpoint(model: nn.Module, scheme: QuantScheme, dtype, device=None) -> nn.Module:
    """Replace the linears ``scheme`` quantizes with its empty runtime layers, ready for ``load_state_dict``
    from a checkpoint the scheme wrote. Returns ``model``."""
    for parent, name, linear in _linears(model, scheme):
        setattr(parent, name, scheme.empty_linear(linear.in_features, linear.out_features, linear.bias is not None,
                                                  dtype, device))
    return model


def quantize_(model: nn.Module, scheme: str | QuantScheme, **options) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` that the scheme quantizes with its runtime layer.

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
    for parent, name, linear in _linears(model, quant):
        setattr(parent, name, quant.linear_from_float(linear))
    return model
