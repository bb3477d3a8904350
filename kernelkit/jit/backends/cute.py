"""CuTe DSL (nvidia-cutlass-dsl): Python-authored kernels, compiled by ``cute.compile`` and persisted.

A CuTe spec names a module (``source``) and a builder in it (``entry``). The builder takes the spec's
template arguments and the target, and returns the result of
``cute.compile(..., options="--enable-tvm-ffi --gpu-arch=<target>")``. We persist it with
``export_to_c`` as an object file, link that into a shared library with the DSL's runtime libraries, and
load it through tvm-ffi. The cache manifest, written last, is the commit marker.

The DSL initialises the CUDA driver while compiling, so this backend needs a GPU machine (or at least its
driver); it refuses CUDA-less machines up front with that reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
from pathlib import Path

from kernelkit.jit.arch import Target
from kernelkit.jit.errors import CompileError
from kernelkit.jit.spec import KernelSpec

EXPORT_NAME = "run"


@functools.cache
def _driver_problem() -> str | None:
    """None if the CUDA driver initialises here, else why not."""
    try:
        from cuda.bindings import driver

        (err,) = driver.cuInit(0)
    except Exception as e:  # libcuda missing: cuda-python raises its own loader errors
        return f"the CUDA driver is not loadable ({type(e).__name__})"
    return None if err == driver.CUresult.CUDA_SUCCESS else f"cuInit failed: {err.name}"


class CuteBackend:
    """``cute.compile`` -> ``export_to_c`` -> shared library -> tvm-ffi."""

    name = "cute"

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("cutlass") is None:
            return "nvidia-cutlass-dsl is not installed (pip install 'kernelkit[cute]')"
        if importlib.util.find_spec("tvm_ffi") is None:
            return "apache-tvm-ffi is not installed (pip install 'kernelkit[cuda]')"
        problem = _driver_problem()
        if problem:
            return f"the CuTe DSL needs a working CUDA driver to compile: {problem}"
        if shutil.which("cc") is None:
            return "no C compiler (cc) to link exported CuTe objects"
        return None

    def versions(self) -> dict[str, str]:
        return {
            "nvidia-cutlass-dsl": importlib.metadata.version("nvidia-cutlass-dsl"),
            "tvm_ffi": importlib.metadata.version("apache-tvm-ffi"),
        }

    def source_digest(self, spec: KernelSpec) -> str:
        origin = importlib.util.find_spec(spec.source).origin
        return hashlib.sha256(Path(origin).read_bytes()).hexdigest()

    def build(self, spec: KernelSpec, target: Target, out_dir: Path, log_path: Path) -> None:
        import cutlass.cute as cute

        builder = getattr(importlib.import_module(spec.source), spec.entry)
        obj, lib = out_dir / "kernel.o", out_dir / "kernel.so"
        try:
            compiled = builder(*spec.template_args, target=target.name)
            compiled.export_to_c(str(obj), function_name=EXPORT_NAME)
        except Exception as e:  # the DSL raises its own error types from deep inside MLIR
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(repr(e))
            raise CompileError(spec.label, str(e), str(log_path)) from e
        runtime_libs = cute.runtime.find_runtime_libraries(enable_tvm_ffi=True)
        # rpath: a later process loads the library from the cache without importing the DSL first.
        rpaths = [f"-Wl,-rpath,{d}" for d in sorted({str(Path(p).parent) for p in runtime_libs})]
        cmd = ["cc", "-shared", "-o", str(lib), str(obj), *runtime_libs, *rpaths]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (out_dir / "build.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out_dir / "build.log", log_path)
            raise CompileError(spec.label, proc.stderr, str(log_path))

    def load(self, spec: KernelSpec, entry_dir: Path):
        import tvm_ffi

        return getattr(tvm_ffi.load_module(str(entry_dir / "kernel.so")), EXPORT_NAME)
