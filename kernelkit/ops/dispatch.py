"""Run an op with the first implementation that can take its arguments, falling back loudly.

An op lists its implementations fastest first (the order comes from ``benches/RESULTS.md``). Each entry
is ``(name, unsupported, run)``: ``unsupported(*args)`` returns None or a reason the implementation cannot
take these arguments (a silent, expected skip: e.g. a group size the CUDA kernel has no specialization
for), and ``run(*args)`` does the work. If ``run`` raises a JIT error (the compiler failed, a backend's
package is broken), we log one warning naming the kernel and the reason, remember it, and use the next
implementation. ``KERNELKIT_DISABLE_JIT`` errors are never swallowed: a deployment that forbids compiling
wants to know.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from kernelkit.jit import BackendUnavailable, CompileError, JitDisabled

log = logging.getLogger("kernelkit.ops")

Impl = tuple[str, Callable[..., str | None], Callable[..., Any]]

_broken: dict[tuple[str, str], str] = {}
_last_used: dict[str, str] = {}


def run_first(op: str, impls: Sequence[Impl], *args: Any) -> Any:
    """Call the first usable implementation of ``op``. Raises the last error if none is usable."""
    for name, unsupported, run in impls:
        if (op, name) in _broken or unsupported(*args):
            continue
        try:
            out = run(*args)
            _last_used[op] = name
            return out
        except JitDisabled:
            raise
        except (CompileError, BackendUnavailable) as e:
            _broken[(op, name)] = str(e)
            log.warning("%s fell back from its %s implementation: %s", op, name, e)
    raise RuntimeError(f"no implementation of {op} can take these arguments")


def last_used() -> dict[str, str]:
    """op -> the implementation that ran its last CUDA call in this process."""
    return dict(_last_used)


@functools.cache
def triton_impl(module: str) -> ModuleType:
    """Import a module of Triton kernels, first routing Triton's cache into kernelkit's per-architecture tree
    when a GPU is present. Raises BackendUnavailable if triton cannot be imported."""
    import torch

    from kernelkit.jit.arch import current_target
    from kernelkit.jit.backends import get_backend

    try:
        loaded = importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(f"triton is not importable: {e}") from e
    if torch.cuda.is_available():
        get_backend("triton").route_cache(current_target())
    return loaded
