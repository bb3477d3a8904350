"""Launch configs of the Triton fused-MoE grouped GEMMs, per GPU, expert shape and weight type.

Tuned configs live in ``configs/`` as JSON files named as vLLM and sglang name theirs (so that their tuned
files can be dropped in): ``E={E},N={N},device_name={name}.json`` for bf16/fp16 experts and
``E={E},N={N},device_name={name},dtype=int8_w8a8.json`` (or ``int4_w4a8``) for quantized ones, N being the
intermediate size per expert (``w2.shape[2]``). Each maps a token count T to {BLOCK_SIZE_M, BLOCK_SIZE_N,
BLOCK_SIZE_K, GROUP_SIZE_M, num_warps, num_stages}; the entry whose T is nearest on a log scale is used (vLLM
takes the nearest linearly). ``kernelkit tune moe`` writes them; without a file for the device or for another
device of its chip (``kernelkit.ops.tuned_devices``), ``default_config`` applies.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from kernelkit.ops.tuned_devices import devices_to_try

CONFIG_DIR = Path(__file__).parent / "configs"
DTYPES = (None, "int8_w8a8", "int4_w4a8")


def config_file_name(num_experts: int, inter: int, device_name: str, dtype: str | None) -> str:
    """vLLM's file name of a tuned config (spaces in the device name become underscores)."""
    if dtype not in DTYPES:
        raise ValueError(f"fused MoE configs: dtype must be one of {DTYPES}, got {dtype!r}")
    device = device_name.replace(" ", "_")
    return f"E={num_experts},N={inter},device_name={device}" + (f",dtype={dtype}" if dtype else "") + ".json"


@functools.cache
def _load(path: Path) -> dict[int, dict] | None:
    if not path.is_file():
        return None
    return {int(t): cfg for t, cfg in json.loads(path.read_text()).items()}


def default_config(tokens: int, top_k: int, num_experts: int) -> dict:
    """Untuned shapes: M tiles sized to the pairs an expert gets on average (16 rows for decode batches), 64-wide
    N tiles, 4 warps, 3 stages (the shape of vLLM's defaults)."""
    per_expert = tokens * top_k / num_experts
    block_m = 16 if per_expert <= 16 else 32 if per_expert <= 32 else 64
    return {"BLOCK_SIZE_M": block_m, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1 if block_m == 16 else 8,
            "num_warps": 4, "num_stages": 3}


@functools.lru_cache(maxsize=4096)
def get_config(tokens: int, top_k: int, num_experts: int, inter: int, device_name: str, dtype: str | None) -> dict:
    """The tuned config whose T is nearest to ``tokens`` for (E, N, device, dtype), else ``default_config``. A
    device without its own file takes one of the same chip's (``kernelkit.ops.tuned_devices``). Raises ValueError
    for a tuned entry that lacks one of the six keys."""
    tables = ((path, _load(path)) for path in (CONFIG_DIR / config_file_name(num_experts, inter, d, dtype)
                                               for d in devices_to_try(device_name)))
    path, table = next(((p, t) for p, t in tables if t), (None, None))
    if not table:
        return default_config(tokens, top_k, num_experts)
    config = table[min(table, key=lambda t: abs(math.log(max(t, 1) / max(tokens, 1))))]
    missing = set(default_config(1, 1, 1)) - set(config)
    if missing:
        raise ValueError(f"{path.name}: an entry lacks {sorted(missing)}")
    return config
