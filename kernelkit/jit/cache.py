"""The on-disk kernel cache: layout, locking, atomic publication, integrity checks and what may be deleted.

Layout: ``<root>/<arch>/<backend>/<name>-<key>/`` where ``<root>`` is ``$KERNELKIT_CACHE_DIR`` or
``~/.cache/kernelkit/<kernelkit version>``. Each entry holds the backend's artifacts and ``manifest.json``,
written last, which lists every file with its sha256: an entry without a manifest, or whose files do not
match it, is corrupt. It is moved aside and rebuilt, never loaded.

Roots: entries are looked up in the configured root even when it is read-only (a deployment ships a warmed
cache that way), and built into it when it is writable. Otherwise builds go to a private fallback under the
system temp dir: ``kernelkit-cache-<uid>``, created 0700 and used only while it is a real directory owned by
this user and closed to everyone else (these are shared libraries: anything another user could plant there
would be loaded), else a fresh ``mkdtemp`` directory.

Ownership: every ``<arch>`` directory kernelkit creates carries a ``.kernelkit-cache`` marker, and
``clear`` removes only marked directories, never anything else under the root.

Publication: an entry is built in a private staging directory and renamed into place. A rename onto an
existing entry fails rather than overwriting it. Builders of the same key serialise on a lock file in a
node-local directory (``$KERNELKIT_LOCK_DIR``, default a private directory under the system temp dir),
because advisory locks on network file systems cannot be trusted. The entry is checked before and after the
lock is taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from kernelkit import __version__

log = logging.getLogger("kernelkit.jit")

MANIFEST = "manifest.json"
ARCH_MARKER = ".kernelkit-cache"
_warned: set[str] = set()
_private_fallbacks: dict[str, Path] = {}


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def private_dir(name: str) -> Path:
    """``<system temp dir>/<name>`` as a directory only this user can reach: created with mode 0700, or an
    existing one that is a real directory (not a link) owned by this user with no group or other access.
    Anything else (another user's directory, a link, loose permissions) is refused with a warning, and a
    fresh ``mkdtemp`` directory, private by construction, is used for the rest of the process."""
    path = Path(tempfile.gettempdir()) / name
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        return _fresh_private(name, f"cannot create {path}: {e}")
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        why = (f"{path} is not a private directory of uid {os.getuid()} (owner uid {st.st_uid}, mode "
               f"{stat.filemode(st.st_mode)}); refusing to trust what is in it")
        return _fresh_private(name, why)
    return path


def _fresh_private(name: str, why: str) -> Path:
    if name not in _private_fallbacks:
        _private_fallbacks[name] = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        log.warning("%s; using %s instead", why, _private_fallbacks[name])
    return _private_fallbacks[name]


def configured_root() -> Path:
    """``$KERNELKIT_CACHE_DIR``, or ``~/.cache/kernelkit/<version>``; it may be read-only."""
    configured = os.environ.get("KERNELKIT_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "kernelkit" / __version__


def cache_root() -> Path:
    """The root new entries are built into: the configured root if writable, else the private fallback
    (with a warning once)."""
    root = configured_root()
    if _writable(root):
        return root
    fallback = private_dir(f"kernelkit-cache-{os.getuid()}") / __version__
    _warn_once(str(root), "kernel cache %s is not writable; cached kernels are read from it and new ones built "
               "in %s", root, fallback)
    fallback.mkdir(exist_ok=True)
    return fallback


def search_roots() -> list[Path]:
    """Where entries are looked up, in order: the configured root (even read-only), then the build root."""
    return list(dict.fromkeys([configured_root(), cache_root()]))


def arch_dir(root: Path, arch: str) -> Path:
    """``<root>/<arch>``, marked as kernelkit's (``ARCH_MARKER``) when kernelkit creates it."""
    path = root / arch
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return path
    atomic_write_text(path / ARCH_MARKER, json.dumps({"kernelkit": __version__, "arch": arch}))
    return path


def lock_dir() -> Path:
    """Node-local directory of per-key build locks and compiler-job slots."""
    configured = os.environ.get("KERNELKIT_LOCK_DIR")
    if not configured:
        return private_dir(f"kernelkit-locks-{os.getuid()}")
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


def max_jobs() -> int:
    """How many compilers may run at once on this node (``$KERNELKIT_MAX_JOBS``, default min(cpus, 8))."""
    configured = os.environ.get("KERNELKIT_MAX_JOBS")
    return max(1, int(configured)) if configured else max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def compile_slot(poll_s: float = 0.05) -> Iterator[None]:
    """Hold one of ``max_jobs()`` node-wide compiler slots (a semaphore made of lock files)."""
    slots = [FileLock(str(lock_dir() / f"compile-slot-{i}.lock")) for i in range(max_jobs())]
    while True:
        for slot in slots:
            try:
                slot.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield
            finally:
                slot.release()
            return
        time.sleep(poll_s)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a uniquely named temp file and a rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(entry: Path, meta: dict) -> None:
    """Checksum every file in ``entry`` and write the manifest last: the entry's commit marker."""
    files = {p.name: _sha256(p) for p in sorted(entry.iterdir()) if p.is_file() and p.name != MANIFEST}
    body = {"kernelkit": __version__, "created": time.time(), "files": files, **meta}
    atomic_write_text(entry / MANIFEST, json.dumps(body, indent=1, sort_keys=True))


def read_manifest(entry: Path) -> dict | None:
    """The entry's manifest if the entry is complete and every checksum matches, else None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        files = manifest["files"]
        if not files:
            return None
        for name, digest in files.items():
            if _sha256(entry / name) != digest:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _quarantine(entry: Path) -> None:
    trash = entry.parent.parent / ".trash"
    trash.mkdir(parents=True, exist_ok=True)
    dest = trash / f"{entry.name}.{uuid.uuid4().hex[:8]}"
    try:
        os.rename(entry, dest)
    except OSError:
        return
    shutil.rmtree(dest, ignore_errors=True)


@dataclass(frozen=True)
class EntryRef:
    """Where one build lives: ``<root>/<arch>/<backend>/<name>-<key>``."""

    root: Path
    arch: str
    backend: str
    name: str
    key: str

    @property
    def relative(self) -> Path:
        return Path(self.arch, self.backend, f"{self.name}-{self.key}")

    @property
    def path(self) -> Path:
        return self.root / self.relative

    @property
    def log_path(self) -> Path:
        return self.root / self.arch / "logs" / f"{self.name}-{self.key}.log"


def find_valid(ref: EntryRef) -> Path | None:
    """The first valid copy of ``ref``'s entry in :func:`search_roots` (a read-only warmed cache included)."""
    for root in dict.fromkeys([*search_roots(), ref.root]):
        if read_manifest(root / ref.relative) is not None:
            return root / ref.relative
    return None


def publish(ref: EntryRef, build: Callable[[Path], None], meta: dict) -> tuple[Path, bool]:
    """Return a valid entry for ``ref``, building it once across processes if needed.

    ``build(staging_dir)`` writes the artifacts. Returns ``(entry_path, built_here)``.
    Raises whatever ``build`` raises; nothing is published then, and the staging directory is removed.
    """
    entry = ref.path
    found = find_valid(ref)
    if found is not None:
        return found, False
    arch_dir(ref.root, ref.arch)
    with FileLock(str(lock_dir() / f"{ref.arch}-{ref.backend}-{ref.key}.lock")):
        if read_manifest(entry) is not None:
            return entry, False
        if entry.exists():
            log.warning("cache entry %s is corrupt or incomplete; rebuilding it", entry)
            _quarantine(entry)
        staging = entry.parent.parent / ".staging" / f"{entry.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            build(staging)
            write_manifest(staging, meta)
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, entry)
            except OSError:
                # Someone published this key without our lock (another node sharing the cache):
                # theirs stands; a published entry is never overwritten.
                if read_manifest(entry) is None:
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry, True


@dataclass(frozen=True)
class Listed:
    """One cached entry, as ``kernelkit jit list`` shows it."""

    arch: str
    backend: str
    name: str
    path: Path
    size: int
    age_s: float
    valid: bool


def list_entries(root: Path | None = None) -> list[Listed]:
    """Every entry under the cache root (default: every root of :func:`search_roots`), valid or not."""
    out = []
    for base in [root] if root else search_roots():
        for entry in sorted(base.glob("*/*/*-*")):
            arch, backend = entry.parent.parent.name, entry.parent.name
            if not entry.is_dir() or arch.startswith(".") or backend.startswith(".") or backend in {"logs", "triton"}:
                continue
            manifest = read_manifest(entry)
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            # Age is for display only; validity never depends on times.
            created = manifest["created"] if manifest else entry.stat().st_mtime
            name = manifest.get("kernel", entry.name) if manifest else entry.name
            out.append(Listed(arch, backend, name, entry, size, time.time() - created, manifest is not None))
    return out


def clear(arch: str | None = None, root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Remove kernelkit's per-arch directories (one ``arch``, or all) under the build root: only those that
    carry kernelkit's marker, never other directories that happen to sit under the root.

    Returns:
        (directories removed, directories left because kernelkit did not create them).
    """
    root = root or cache_root()
    candidates = [root / arch] if arch else sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    removed, left = [], []
    for path in candidates:
        if not path.is_dir():
            continue
        if not (path / ARCH_MARKER).is_file():
            left.append(path)
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed, left
