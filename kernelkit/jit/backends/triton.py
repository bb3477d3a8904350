"""Triton: kernels are ``@triton.jit`` functions in ``kernelkit/ops``; Triton compiles and caches them itself.

kernelkit's part is routing Triton's cache into kernelkit's per-architecture tree
(``<cache root>/<arch>/triton``), unless the user has set ``TRITON_CACHE_DIR``.
"""

from __future__ import annotations

import os

from kernelkit.jit.arch import Target

_routed: set[str] = set()
# Triton's knobs are backed by environment variables (setting the cache dir sets TRITON_CACHE_DIR), so the
# user's own choice is read once, before kernelkit touches it.
_USER_CACHE_DIR = os.environ.get("TRITON_CACHE_DIR")


class TritonBackend:
    """The Triton compiler, as installed."""

    name = "triton"

    def unavailable_reason(self) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (pip install 'kernelkit[triton]')"
        return None

    def versions(self) -> dict[str, str]:
        import triton

        return {"triton": triton.__version__}

    def route_cache(self, target: Target) -> None:
        """Point Triton's cache at ``<cache root>/<target>/triton`` (once; ``TRITON_CACHE_DIR`` wins)."""
        if target.name in _routed or _USER_CACHE_DIR:
            return
        import triton

        from kernelkit.jit.cache import arch_dir, cache_root

        path = arch_dir(cache_root(), target.name) / "triton"
        path.mkdir(parents=True, exist_ok=True)
        triton.knobs.cache.dir = str(path)
        _routed.add(target.name)
