"""JIT costs: cold compile and cached load per backend, each load in a fresh process.

The cold compile runs in this process against an empty cache; the cached load is timed in a new Python
process (what a server start pays) after torch and tvm-ffi are imported: key computation, manifest
checksum and module load.
Runs without a GPU for tvm_ffi/NVRTC (the load then only opens the module); CuTe needs a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from kernelkit.jit import current_target, ensure_built
from kernelkit.jit.backends import get_backend
from kernelkit.ops.quant import cuda_impl, cute_impl

SPECS = {
    "tvm_ffi": cuda_impl.spec("tvm_ffi", torch.bfloat16, torch.float8_e4m3fn, 128, False),
    "nvrtc": cuda_impl.spec("nvrtc", torch.bfloat16, torch.float8_e4m3fn, 128, False),
    "cute": cute_impl.spec(torch.bfloat16),
}

_LOAD = """
import json, sys, time
import torch
import tvm_ffi  # library imports are not part of the load
from kernelkit.jit import load, current_target
from kernelkit.ops.quant import cuda_impl, cute_impl
spec = {"tvm_ffi": lambda: cuda_impl.spec("tvm_ffi", torch.bfloat16, torch.float8_e4m3fn, 128, False),
        "nvrtc": lambda: cuda_impl.spec("nvrtc", torch.bfloat16, torch.float8_e4m3fn, 128, False),
        "cute": lambda: cute_impl.spec(torch.bfloat16)}[sys.argv[1]]()
target = current_target()
if torch.cuda.is_available():
    torch.zeros(1, device="cuda")  # CUDA context first: not part of the load
t1 = time.perf_counter()
load(spec, target)
print(json.dumps({"load_s": time.perf_counter() - t1}))
"""


@pytest.mark.parametrize("backend", SPECS)
def bench_compile_and_load(record, tmp_path, monkeypatch, backend):
    reason = get_backend(backend).unavailable_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(tmp_path))
    if not torch.cuda.is_available():
        monkeypatch.setenv("KERNELKIT_ARCH", os.environ.get("KERNELKIT_ARCH", "sm_90a"))
    t0 = time.perf_counter()
    _, built = ensure_built(SPECS[backend], current_target())
    cold = time.perf_counter() - t0
    assert built
    load_ms = "n/a (loading a cubin needs a GPU)"
    if torch.cuda.is_available() or backend == "tvm_ffi":
        out = subprocess.run([sys.executable, "-c", _LOAD, backend], capture_output=True, text=True, env=os.environ)
        assert out.returncode == 0, out.stderr
        load_ms = f"{json.loads(out.stdout.strip().splitlines()[-1])['load_s'] * 1e3:.1f}"
    record("jit_compile_and_load", {"backend": backend, "kernel": SPECS[backend].label,
                                    "cold compile s": f"{cold:.2f}", "cached load ms": load_ms})
