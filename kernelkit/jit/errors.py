"""Errors raised by the JIT."""

from __future__ import annotations


class JitError(RuntimeError):
    """Base class of JIT errors."""


class BackendUnavailable(JitError):
    """A backend's package or toolchain is missing on this machine."""


class CompileError(JitError):
    """A compiler failed. The message carries the compiler's output and the path of the kept build log."""

    def __init__(self, kernel: str, message: str, log_path: str | None):
        self.kernel = kernel
        self.log_path = log_path
        where = f"\nbuild log: {log_path}" if log_path else ""
        super().__init__(f"compiling {kernel} failed:\n{message.strip()}{where}")


class JitDisabled(JitError):
    """``KERNELKIT_DISABLE_JIT=1`` is set and a kernel is not in the cache."""
