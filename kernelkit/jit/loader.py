"""``load(spec)``: the one entry point from a kernel spec to a callable, through the cache.

Order of events for a spec: in-process memo -> verified cache entry in any search root
-> (``KERNELKIT_DISABLE_JIT`` check) -> per-key lock -> compiler slot -> build in staging -> publish by rename -> load.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kernelkit.jit import cache
from kernelkit.jit.arch import Target, current_target
from kernelkit.jit.backends import get_backend
from kernelkit.jit.backends.base import CachedBackend
from kernelkit.jit.errors import BackendUnavailable, JitDisabled
from kernelkit.jit.key import make_key
from kernelkit.jit.spec import KernelSpec

log = logging.getLogger("kernelkit.jit")

_memo: dict[tuple[str, str], Any] = {}
_memo_lock = threading.Lock()


def jit_disabled() -> bool:
    """True when ``KERNELKIT_DISABLE_JIT`` is set to a true value: missing kernels are errors."""
    return os.environ.get("KERNELKIT_DISABLE_JIT", "").lower() in {"1", "true", "yes", "on"}


def entry_for(spec: KernelSpec, target: Target) -> cache.EntryRef:
    """The cache entry a spec maps to on ``target``. Raises BackendUnavailable."""
    backend: CachedBackend = get_backend(spec.backend)
    reason = backend.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"{spec.backend} backend unavailable for {spec.label}: {reason}")
    key = make_key({
        "spec": asdict(spec),
        "target": target.name,
        "versions": backend.versions(),
        "source": backend.source_digest(spec),
    })
    return cache.EntryRef(cache.cache_root(), target.name, spec.backend, spec.name, key)


def ensure_built(spec: KernelSpec, target: Target) -> tuple[Path, bool]:
    """Make sure the spec's entry exists on disk; returns ``(entry_dir, compiled_now)``.

    Raises:
        BackendUnavailable: the backend cannot run here.
        JitDisabled: the entry is missing and ``KERNELKIT_DISABLE_JIT`` is set.
        CompileError: the compiler failed (message and build-log path included).
    """
    ref = entry_for(spec, target)
    found = cache.find_valid(ref)
    if found is not None:
        return found, False
    if jit_disabled():
        looked = ", ".join(str(root) for root in cache.search_roots())
        raise JitDisabled(
            f"KERNELKIT_DISABLE_JIT is set and kernel {spec.label} [{spec.backend}, {target}] is not cached "
            f"(looked in {looked}).\nmissing: {ref.relative}\n"
            f"run `kernelkit jit warmup --arch {target}` where compiling is allowed"
        )
    backend = get_backend(spec.backend)

    def build(staging: Path) -> None:
        with cache.compile_slot():
            log.info("compiling %s [%s] for %s -> %s", spec.label, spec.backend, target, ref.path)
            t0 = time.perf_counter()
            backend.build(spec, target, staging, ref.log_path)
            log.debug("compiled %s in %.1f s", spec.label, time.perf_counter() - t0)

    return cache.publish(ref, build, {"kernel": spec.label, "target": target.name, "backend": spec.backend})


def load(spec: KernelSpec, target: Target | None = None) -> Any:
    """The callable for ``spec`` on ``target`` (default: the current device), compiling it at most once.

    Raises as :func:`ensure_built` does.
    """
    target = target or current_target()
    memo_key = (repr(spec), target.name)
    fn = _memo.get(memo_key)
    if fn is not None:
        return fn
    with _memo_lock:
        fn = _memo.get(memo_key)
        if fn is None:
            entry, _ = ensure_built(spec, target)
            fn = _memo[memo_key] = get_backend(spec.backend).load(spec, entry)
    return fn
