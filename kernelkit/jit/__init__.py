"""Compile and cache kernels per GPU architecture.

Public surface:
    KernelSpec           what to build (source, entry, template args, flags, backend)
    load(spec, target)   the callable, compiled at most once per cache key across processes
    ensure_built         the same without loading (ahead-of-time builds)
    current_target       the target to compile for (``$KERNELKIT_ARCH`` or the device's own)
"""

from kernelkit.jit.arch import Target, current_target, parse_target
from kernelkit.jit.errors import BackendUnavailable, CompileError, JitDisabled, JitError
from kernelkit.jit.loader import ensure_built, load
from kernelkit.jit.spec import KernelSpec

__all__ = [
    "BackendUnavailable", "CompileError", "JitDisabled", "JitError", "KernelSpec", "Target",
    "current_target", "ensure_built", "load", "parse_target",
]
