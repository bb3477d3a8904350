"""The timings file of a bench run (``timings.json``, format ``kernelkit-bench-timings/1``): written by the
benches (``benches/conftest.py``) and by ``kernelkit bench --json``, read by ``benches/regress.py`` (the
regression check against ``benches/baselines/<device>.json``) and ``benches/plots.py``. Its only definition::

    {"format": "kernelkit-bench-timings/1", "device": "NVIDIA H200", "date": "2026-12-07", "torch": "2.11.0+cu130",
     "copy_gbs": 4250.0,                      # the device's measured copy rate (the roof of memory-bound kernels)
     "cases": {"bench_quant.py::bench_per_token_group_quant_fp8[1-2048]": {
         "table": "per_token_group_quant_fp8", "params": {"t": 1, "h": 2048},
         "nbytes": 4224, "flops": null,       # minimum traffic and arithmetic of one call, when they mean something
         "ours": {"cuda": 0.0021, "triton": 0.0030},         # kernelkit's times, ms: these are guarded
         "peers": {"torch.compile": 0.0041}}}}                # baselines' times, ms: drawn, not guarded
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path

import torch

FORMAT = "kernelkit-bench-timings/1"


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, through a temporary file in the same folder and a rename, so that
    an interrupted write leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(path: Path, cases: dict[str, dict], device: str | None = None) -> Path:
    """Write ``cases`` (case id -> the case layout above) as a timings file at ``path``, stamped with the device
    (default: the current CUDA device, else "cpu"), today's date, torch's version and, when a CUDA device is
    present, its measured copy rate in GB/s (``kernelkit.ops.timing``)."""
    has_gpu = torch.cuda.is_available()
    copy_gbs = None
    if has_gpu:
        from kernelkit.ops.timing import copy_bandwidth_gbs

        copy_gbs = copy_bandwidth_gbs()
    device = device or (torch.cuda.get_device_name() if has_gpu else "cpu")
    write_json_atomic(path, {"format": FORMAT, "device": device, "date": str(datetime.date.today()),
                             "torch": torch.__version__, "copy_gbs": copy_gbs, "cases": cases})
    return Path(path)


def load(path: Path) -> dict:
    """A timings file as a dict. Raises ValueError naming the file when it is not JSON of this format."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("cases"), dict):
        raise ValueError(f"{path}: not a {FORMAT} file (kernelkit/bench/timings.py documents the format)")
    return data
