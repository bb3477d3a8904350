"""Compile backends, by name. Importing this never imports a backend's optional package."""

from __future__ import annotations

from kernelkit.jit.backends.base import Backend
from kernelkit.jit.backends.cute import CuteBackend
from kernelkit.jit.backends.nvrtc import NvrtcBackend
from kernelkit.jit.backends.triton import TritonBackend
from kernelkit.jit.backends.tvm_ffi import TvmFfiBackend

BACKENDS = {b.name: b for b in (TvmFfiBackend(), NvrtcBackend(), CuteBackend(), TritonBackend())}


def get_backend(name: str) -> Backend:
    """The backend called ``name``. Raises KeyError naming the known backends."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown JIT backend {name!r}; known: {sorted(BACKENDS)}") from None
