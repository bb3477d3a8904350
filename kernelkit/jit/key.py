"""Cache keys: a digest of everything that changes the compiled artifact.

Freshness never rests on file mtimes (pip reinstalls bump them) nor on tvm-ffi's own cache key (it hashes
paths and flags, not header contents or the target). The key covers the transitive contents of every
quoted ``#include`` reachable from the source, so editing a shared header rebuilds its users.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _resolve_include(name: str, including_dir: Path, include_dirs: tuple[Path, ...]) -> Path | None:
    for base in (including_dir, *include_dirs):
        candidate = base / name
        if candidate.is_file():
            return candidate.resolve()
    return None


def transitive_sources(root: Path, include_dirs: tuple[Path, ...]) -> list[Path]:
    """Every file reachable from ``root`` through quoted includes, ``root`` first.

    System includes (``<...>``) are not followed: they belong to the toolchain, whose version is part of
    the key. A quoted include that resolves nowhere is left to the compiler to report.
    """
    seen: dict[Path, None] = {}
    stack = [root.resolve()]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen[path] = None
        for name in _QUOTED_INCLUDE.findall(path.read_text()):
            found = _resolve_include(name, path.parent, include_dirs)
            if found is not None:
                stack.append(found)
    return list(seen)


def source_digest(root: Path, include_dirs: tuple[Path, ...], relative_to: Path) -> str:
    """sha256 over the names (relative to ``relative_to``) and contents of ``root``'s transitive sources."""
    h = hashlib.sha256()
    files = transitive_sources(root, include_dirs)
    for path in sorted(files):
        try:
            label = str(path.relative_to(relative_to.resolve()))
        except ValueError:
            label = str(path)
        h.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def make_key(parts: dict) -> str:
    """A short stable digest of a JSON-serialisable description of one build."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
