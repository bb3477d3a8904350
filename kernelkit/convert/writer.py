"""Where a conversion writes: a private ``.<dst>.partial`` directory next to DST, filled shard by shard and
renamed to DST only when complete. An interrupted run leaves DST untouched; ``--resume`` picks the partial
directory up again if it belongs to the same plan over the same source files (``convert_state.json`` records
the plan digest, each source file's size and mtime, and the finished shards), and refuses otherwise.

What may be replaced: never a DST that is or contains the source, and with ``--overwrite`` only a DST that is
empty or a checkpoint (config.json plus safetensors), never a directory of other files."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from kernelkit.convert.errors import ConvertError
from kernelkit.jit.cache import atomic_write_text

STATE = "convert_state.json"


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Raises ConvertError if writing DST could destroy something that is not a previous conversion: DST is or
    contains SRC, DST is a file, or DST exists (without ``overwrite``, or with it while DST is a non-empty
    directory that is not a checkpoint)."""
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if src_abs == dst_abs or dst_abs in src_abs.parents:
        raise ConvertError(f"DST {dst} contains the source {src}: replacing it would delete the source; pick "
                           "another DST")
    if not dst.exists():
        return
    if not dst.is_dir():
        raise ConvertError(f"DST {dst} exists and is not a directory")
    if not overwrite:
        raise ConvertError(f"{dst} exists; pass --overwrite to replace it")
    if any(dst.iterdir()) and not _is_checkpoint(dst):
        raise ConvertError(f"refusing to replace {dst}: it is not a checkpoint (no config.json with safetensors "
                           "files), so --overwrite would delete unrelated files; remove it yourself or pick another "
                           "DST")


class PartialDir:
    """The staging directory of one conversion.

    Raises:
        ConvertError: DST's parent is not writable, or ``resume`` finds a partial run of another plan or over
            source files that changed since (size or mtime).
    """

    def __init__(self, dst: Path, digest: str, source: list, resume: bool):
        self.dst = dst
        self.path = dst.parent / f".{dst.name}.partial"
        self.digest, self.source = digest, [list(f) for f in source]
        state = self._read_state() if resume else None
        if state is not None:
            self._check_resumable(state)
        else:
            self._start()
            state = {"done": {}}
        self.done: dict[str, int] = {name: size for name, size in state["done"].items()
                                     if (self.path / name).is_file() and (self.path / name).stat().st_size == size}

    def _start(self) -> None:
        try:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            self._write_state({})
        except OSError as e:
            raise ConvertError(f"cannot write the output next to {self.dst}: {e.strerror or e} ({e.filename})") from e

    def _check_resumable(self, state: dict) -> None:
        if state.get("source") != self.source:
            then = {name: (size, mtime) for name, size, mtime in state.get("source") or []}
            changed = [name for name, size, mtime in self.source if then.get(name) != (size, mtime)]
            raise ConvertError(f"cannot --resume {self.path}: the source changed since that run "
                               f"({', '.join(changed) or 'other files'}); run without --resume to start over")
        if state.get("digest") != self.digest:
            raise ConvertError(f"cannot --resume {self.path}: it was started with other options or another "
                               "scheme; run without --resume to start over")

    def _write_state(self, done: dict[str, int]) -> None:
        atomic_write_text(self.path / STATE, json.dumps({"digest": self.digest, "source": self.source, "done": done}))

    def discard(self) -> None:
        """Remove the partial directory (a run that failed on its input has nothing to resume)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _read_state(self) -> dict | None:
        try:
            return json.loads((self.path / STATE).read_text())
        except (OSError, ValueError):
            return None

    def commit_shard(self, tmp: Path, shard: str) -> None:
        """Move a fully written temp file into place as ``shard`` and record it. safetensors creates files
        private to the user (0600); give them the permissions ordinary files get here (those of the state file)."""
        os.chmod(tmp, (self.path / STATE).stat().st_mode & 0o777)
        os.replace(tmp, self.path / shard)
        self.done[shard] = (self.path / shard).stat().st_size
        self._write_state(self.done)

    def publish(self, overwrite: bool) -> Path:
        """Rename the finished directory to DST (replacing an existing DST only with ``overwrite``)."""
        (self.path / STATE).unlink()
        old = None
        if self.dst.exists():
            if not overwrite:
                raise ConvertError(f"{self.dst} exists; pass --overwrite to replace it")
            old = self.dst.parent / f".{self.dst.name}.old-{uuid.uuid4().hex[:8]}"
            self.dst.rename(old)
        self.path.rename(self.dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.dst
