"""The interface every compile backend implements."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kernelkit.jit.arch import Target
from kernelkit.jit.spec import KernelSpec


class Backend(Protocol):
    """A way of turning kernel source into something callable."""

    name: str

    def unavailable_reason(self) -> str | None:
        """None when the backend can compile here, else why not (a missing package or tool)."""

    def versions(self) -> dict[str, str]:
        """Versions of every tool and library that changes the artifact; they enter the cache key."""


class CachedBackend(Backend, Protocol):
    """A backend whose artifacts kernelkit caches itself (tvm-ffi, NVRTC, CuTe DSL)."""

    def source_digest(self, spec: KernelSpec) -> str:
        """A digest of the spec's source and everything it includes."""

    def build(self, spec: KernelSpec, target: Target, out_dir: Path, log_path: Path) -> None:
        """Compile into ``out_dir``. Raises CompileError with the compiler's message on failure."""

    def load(self, spec: KernelSpec, entry_dir: Path) -> Callable[..., Any]:
        """Load a built entry and return its callable."""
