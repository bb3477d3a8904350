"""Where a conversion writes: a private ``.<dst>.partial`` directory next to DST, filled shard by shard and
renamed to DST only when complete. An interrupted run leaves DST untouched; ``--resume`` picks the partial
directory up again if it belongs to the same plan (``convert_state.json`` records the plan digest and the
finished shards)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from kernelkit.convert.errors import ConvertError
from kernelkit.jit.cache import atomic_write_text

STATE = "convert_state.json"


class PartialDir:
    """The staging directory of one conversion."""

    def __init__(self, dst: Path, digest: str, resume: bool):
        self.dst = dst
        self.path = dst.parent / f".{dst.name}.partial"
        self.digest = digest
        state = self._read_state() if resume else None
        if state is None or state.get("digest") != digest:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            state = {"digest": digest, "done": {}}
            atomic_write_text(self.path / STATE, json.dumps(state))
        self.done: dict[str, int] = {name: size for name, size in state["done"].items()
                                     if (self.path / name).is_file() and (self.path / name).stat().st_size == size}

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
        atomic_write_text(self.path / STATE, json.dumps({"digest": self.digest, "done": self.done}))

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
