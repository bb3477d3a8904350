"""Launcher of the CuTe DSL static per-tensor FP8 quantizer (``cute_static_quant.py``) through the JIT."""

from __future__ import annotations

import torch

from kernelkit.jit import KernelSpec, load

_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def spec(x_dtype: torch.dtype) -> KernelSpec:
    """The CuTe kernel spec for inputs of ``x_dtype``."""
    return KernelSpec("per_tensor_quant_fp8_static", "cute", "kernelkit.ops.quant.cute_static_quant", "build",
                      (_DTYPES[x_dtype],))


def unsupported(x: torch.Tensor, dynamic: bool) -> str | None:
    """Why the CuTe kernel cannot take this call (None if it can)."""
    if dynamic:
        return "dynamic scales (the CuTe kernel takes a given scale)"
    if x.dim() == 0 or x.shape[-1] % 16 or x.data_ptr() % 16 or not x.is_contiguous():
        return "last dimension not a multiple of 16, or not contiguous and 16-byte aligned"
    return None


def tensor_quant_fp8_static(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
    """q = fp8(clamp(x / scale)) for contiguous x [..., N], N % 16 == 0; scale fp32 [1]."""
    if x.numel() == 0:
        return
    n = x.shape[-1]
    load(spec(x.dtype))(x.view(-1, n), q.view(-1, n), scale)


def warmup_specs() -> list[KernelSpec]:
    """The specializations ``kernelkit jit warmup`` builds ahead of time."""
    return [spec(dtype) for dtype in _DTYPES]
