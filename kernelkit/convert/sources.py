"""Checkpoint sources: an HF model directory (single or sharded safetensors + config.json) or a GGUF file.

A source yields ``SourceTensor``s shard by shard; each loads its data only when asked, so memory holds one
tensor at a time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from kernelkit.convert.errors import ConvertError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Files copied verbatim from an HF source: tokenizer, chat template, generation defaults.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
              "generation_config.json")


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the source: its metadata now, its data on demand. ``load_rows(a, b)`` returns rows
    a..b (along dim 0) as a CPU tensor in its own memory; 0-d tensors have a single row."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    origin: str  # file it comes from, for error messages
    load_rows: Callable[[int, int], torch.Tensor]

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * self.dtype.itemsize

    def load(self) -> torch.Tensor:
        """The whole tensor."""
        return self.load_rows(0, self.rows)


class HfSource:
    """An HF model directory. Raises ConvertError for a missing config, index or shard, or a corrupt file."""

    def __init__(self, path: Path):
        self.path = path
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ConvertError(f"{path}: no config.json (not an HF model directory)")
        try:
            self.config = json.loads(config_path.read_text())
        except ValueError as e:
            raise ConvertError(f"{config_path}: not valid JSON ({e})") from e
        if not isinstance(self.config, dict):
            raise ConvertError(f"{config_path}: expected a JSON object of model settings, got a "
                               f"{type(self.config).__name__}")
        self.shards = self._shard_files()

    def files(self) -> list[Path]:
        """Every file the conversion reads (for ``--resume``'s check that the source did not change)."""
        index = self.path / INDEX
        return [self.path / "config.json", *([index] if index.is_file() else []), *self.shards]

    def _shard_files(self) -> list[Path]:
        index = self.path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise ConvertError(f"{index}: not a safetensors index ({e})") from e
            files = list(dict.fromkeys(weight_map.values()))
            missing = [f for f in files if not (self.path / f).is_file()]
            if missing:
                raise ConvertError(f"{index} names shards that do not exist: {missing}")
            return [self.path / f for f in files]
        if (self.path / SINGLE).is_file():
            return [self.path / SINGLE]
        raise ConvertError(f"{self.path}: neither {INDEX} nor {SINGLE}")

    def tensors(self) -> Iterator[SourceTensor]:
        """Metadata of every tensor, shard by shard. Each load opens the shard and copies a row range out
        (``get_slice``): a tensor from ``get_tensor`` is a view of the memory map, and every page of it that
        is touched stays resident for as long as the tensor lives."""
        from safetensors import safe_open

        for shard in self.shards:
            try:  # safetensors checks on open that the header is sane and the data covers the file
                with safe_open(str(shard), framework="pt") as handle:
                    meta = {name: handle.get_slice(name) for name in handle.keys()}
                    meta = {name: (tuple(sl.get_shape()), sl.get_dtype()) for name, sl in meta.items()}
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ConvertError(f"{shard}: corrupt or truncated safetensors file ({e})") from e
            for name, (shape, dtype_name) in meta.items():
                dtype = _DTYPES.get(dtype_name)
                if dtype is None:
                    raise ConvertError(f"{shard}: tensor {name} has unsupported dtype {dtype_name}")
                yield SourceTensor(name, shape, dtype, str(shard),
                                   lambda a, b, n=name, s=shard: _load_rows(s, n, a, b))

    def tokenizer(self):
        """The source's HF tokenizer (for calibration text)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    def hf_config(self):
        """The source's config as a transformers config object (for calibration's modeling code)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(**{k: v for k, v in self.config.items() if k != "quantization_config"})

    def copy_side_files(self, dst: Path) -> None:
        for name in SIDE_FILES:
            if (self.path / name).is_file():
                shutil.copy2(self.path / name, dst / name)


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
           "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _load_rows(shard: Path, name: str, start: int, stop: int) -> torch.Tensor:
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="pt") as handle:
            sl = handle.get_slice(name)
            return sl[start:stop] if sl.get_shape() else handle.get_tensor(name).clone()
    except Exception as e:
        raise ConvertError(f"{shard}: cannot read tensor {name} ({e})") from e


def identity(files: list[Path]) -> list[tuple[str, int, int]]:
    """(name, size in bytes, mtime in ns) of each file: what ``--resume`` compares to know that the source
    is the one the interrupted run read (a rewritten shard changes its size or its mtime)."""
    return [(f.name, (st := f.stat()).st_size, st.st_mtime_ns) for f in files]


def open_source(path: str | Path) -> HfSource:
    """The source at ``path``: a GGUF file, or an HF model directory. Raises ConvertError."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        from kernelkit.convert.gguf_source import GgufSource

        return GgufSource(path)
    if path.is_dir():
        return HfSource(path)
    raise ConvertError(f"{path}: not an HF model directory or a .gguf file")
