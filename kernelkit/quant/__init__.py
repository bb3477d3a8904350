"""Quantization schemes: a registry (entry-point group ``kernelkit.quant``), built-in schemes, and
``quantize_`` for live models.

    from kernelkit.quant import get_scheme, list_schemes, quantize_
    quantize_(model, "fp8-block")
"""

from kernelkit.quant.patch import quantize_, replace_linears, resolve_scheme
from kernelkit.quant.registry import (
    SchemeError,
    checkpoint_quantization_config,
    get_scheme,
    list_schemes,
    scheme_from_config,
)
from kernelkit.quant.scheme import QuantScheme

__all__ = ["QuantScheme", "SchemeError", "checkpoint_quantization_config", "get_scheme", "list_schemes", "quantize_",
           "replace_linears",
           "resolve_scheme", "scheme_from_config"]
