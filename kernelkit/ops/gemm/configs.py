"""Launch configs of the Triton block-FP8 GEMM, per GPU and shape.

Tuned configs live in ``configs/`` as JSON files named like sglang's:
``N={N},K={K},device_name={name},dtype=fp8_w8a8,block_shape=[{bn}, {bk}].json``, each mapping a batch size M
to {BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M, num_warps, num_stages} and optionally SPLIT_K
(kernelkit's addition; 1 when absent, as in sglang's files) and ``faster_than_cublas`` (kernelkit's too: true
where ``scripts/tune_gemm.py`` timed this config faster than cuBLAS block-wise at that M on that device, so the
dispatch runs Triton at that M and at the smaller ones it is the next tuned M above; false or absent: cuBLAS
first). For a given M the entry whose key is nearest on a log scale is used, if it is within 4x of M (a decode
config is no prefill config). Otherwise, or with no file for the shape and device (or another device of its
chip, ``kernelkit.ops.tuned_devices``), ``default_config`` applies.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from kernelkit.ops.tuned_devices import devices_to_try

CONFIG_DIR = Path(__file__).parent / "configs"


def config_file_name(n: int, k: int, device_name: str, block_size: tuple[int, int]) -> str:
    """sglang's file name for a tuned config (spaces in the device name become underscores)."""
    device = device_name.replace(" ", "_")
    return f"N={n},K={k},device_name={device},dtype=fp8_w8a8,block_shape=[{block_size[0]}, {block_size[1]}].json"


@functools.cache
def _load(path: Path) -> dict[int, dict] | None:
    if not path.is_file():
        return None
    return {int(m): cfg for m, cfg in json.loads(path.read_text()).items()}


# programs that keep an H100/H200 (132 SMs) streaming at decode sizes: two per SM
DECODE_PROGRAMS = 264


def default_config(m: int, n: int, k: int, block_size: tuple[int, int]) -> dict:
    """Untuned shapes: narrow N tiles and deep pipelines for decode, where streaming the weights is the whole cost
    (the tuned H200 winners at M <= 16), with K split until there are ``DECODE_PROGRAMS`` programs (at least 4
    K blocks each); 128 x 128 tiles on 8 warps for prefill (the tuned winner at M = 4096)."""
    if m <= 16:
        block_n = 32
        tiles, k_blocks = -(-n // block_n), -(-k // block_size[1])
        split_k = max(1, min(-(-DECODE_PROGRAMS // max(tiles, 1)), k_blocks // 4))
        return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": block_n, "BLOCK_SIZE_K": block_size[1], "GROUP_SIZE_M": 1,
                "num_warps": 2, "num_stages": 6, "SPLIT_K": split_k}
    if m <= 256:
        return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": block_size[0], "BLOCK_SIZE_K": block_size[1], "GROUP_SIZE_M": 8,
                "num_warps": 4, "num_stages": 3}
    return {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": block_size[1], "GROUP_SIZE_M": 8,
            "num_warps": 8, "num_stages": 3}


def _table(n: int, k: int, device_name: str, block_size: tuple[int, int]) -> tuple[Path | None, dict | None]:
    """(path, {M: config}) of the tuned file for this shape on this device or the first of its chip that has one."""
    tables = ((path, _load(path)) for path in (CONFIG_DIR / config_file_name(n, k, d, block_size)
                                               for d in devices_to_try(device_name)))
    return next(((p, t) for p, t in tables if t), (None, None))


@functools.lru_cache(maxsize=4096)  # called on every GEMM: file lookup and nearest-key search once per shape
def get_config(m: int, n: int, k: int, device_name: str, block_size: tuple[int, int]) -> dict:
    """The tuned config nearest to M (within 4x) for (N, K, device, block), else ``default_config``. A device
    without its own file takes one of the same chip's (``kernelkit.ops.tuned_devices``)."""
    path, table = _table(n, k, device_name, block_size)
    if not table:
        return default_config(m, n, k, block_size)
    near = [key for key in table if max(key, m) <= 4 * max(1, min(key, m))]  # within 4x of M
    if not near:
        return default_config(m, n, k, block_size)
    config = table[min(near, key=lambda key: abs(math.log(max(key, 1) / max(m, 1))))]
    if config.get("BLOCK_SIZE_K", block_size[1]) != block_size[1]:
        raise ValueError(f"{path.name}: BLOCK_SIZE_K must equal the quantization block {block_size[1]}")
    return config


@functools.lru_cache(maxsize=4096)
def faster_than_cublas(m: int, n: int, k: int, device_name: str, block_size: tuple[int, int]) -> bool:
    """Whether Triton beat cuBLAS block-wise at the first tuned M at or above this M (within 4x of it): its
    ``faster_than_cublas`` mark. cuBLAS's tensor cores gain on Triton as M grows, so a win at a larger M holds
    at this one, and a win at a smaller M says nothing (on an H100, (2112, 7168): Triton 21.3 against 22.0 µs
    at M = 256, 66 against 45 µs at M = 1024). False above the largest tuned M and for a default config."""
    _, table = _table(n, k, device_name, block_size)
    above = [key for key in table or () if m <= key <= 4 * max(m, 1)]
    return bool(above) and bool(table[min(above)].get("faster_than_cublas", False))
