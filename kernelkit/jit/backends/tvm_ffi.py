"""CUDA C++ from ``kernels_src/``, compiled by nvcc into a shared library and loaded through apache-tvm-ffi.

The same approach as sglang's jit_kernel, with kernelkit's own cache key and target handling: we call nvcc
ourselves with an explicit ``-gencode`` for the target, instead of letting tvm-ffi read
``TVM_FFI_CUDA_ARCH_LIST`` from the environment (a process-global, not thread-safe) or ``nvidia-smi``.

Each spec becomes one translation unit that includes its source and exports the specialised host
launcher as the tvm-ffi function ``run``. torch tensors passed to it carry torch's current stream, which
the launcher reads with ``TVMFFIEnvGetStream``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

from kernelkit.jit.arch import Target
from kernelkit.jit.errors import CompileError
from kernelkit.jit.key import source_digest
from kernelkit.jit.spec import KernelSpec, kernels_src_dir

EXPORT_NAME = "run"
BASE_FLAGS = ("-std=c++17", "-O3", "-shared", "-Xcompiler=-fPIC", "-lineinfo", "--resource-usage")


@functools.cache
def find_nvcc() -> str | None:
    """Path of nvcc: ``$CUDA_HOME/bin/nvcc``, else the one on PATH."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _nvcc_signature() -> str:
    """Identity of the nvcc binaries in play (the one found, and $CUDA_HOME's, which a wrapper may exec)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    parts = []
    for path in sorted({os.path.realpath(find_nvcc()), os.path.realpath(os.path.join(home, "bin", "nvcc"))}):
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "|".join(parts)


@functools.cache
def nvcc_version() -> str:
    """The last line of ``nvcc --version``, e.g. ``Build cuda_13.0.r13.0/compiler.36424714_0``.

    Running nvcc costs ~50 ms, which would dominate a cached kernel load, so the answer is remembered in
    ``<cache root>/toolchains.json`` per nvcc binary identity (path, size, mtime, inode). A changed binary
    only means asking nvcc again; the version string, not the file stamp, is what enters kernel keys.
    """
    from kernelkit.jit.cache import atomic_write_text, cache_root

    memo_path = cache_root() / "toolchains.json"
    signature = _nvcc_signature()
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if signature in memo:
        return memo[signature]
    out = subprocess.run([find_nvcc(), "--version"], capture_output=True, text=True, check=True).stdout
    memo[signature] = out.strip().splitlines()[-1]
    atomic_write_text(memo_path, json.dumps(memo))
    return memo[signature]


def translation_unit(spec: KernelSpec) -> str:
    """The generated source that instantiates the spec's launcher and exports it."""
    return (
        f'#include "{spec.source}"\n'
        f"TVM_FFI_DLL_EXPORT_TYPED_FUNC({EXPORT_NAME}, (&{spec.instantiation}));\n"
    )


class TvmFfiBackend:
    """nvcc + apache-tvm-ffi."""

    name = "tvm_ffi"

    def unavailable_reason(self) -> str | None:
        try:
            import tvm_ffi  # noqa: F401
        except ImportError:
            return "apache-tvm-ffi is not installed (pip install 'kernelkit[cuda]')"
        if find_nvcc() is None:
            return "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
        return None

    def versions(self) -> dict[str, str]:
        import tvm_ffi

        return {"nvcc": nvcc_version(), "tvm_ffi": tvm_ffi.__version__}

    def source_digest(self, spec: KernelSpec) -> str:
        src = kernels_src_dir()
        return source_digest(src / spec.source, (src,), src)

    def command(self, spec: KernelSpec, target: Target, tu: Path, out: Path) -> list[str]:
        """The full nvcc command line for one build."""
        from tvm_ffi import libinfo

        libdir = str(Path(libinfo.find_libtvm_ffi()).parent)
        return [
            find_nvcc(), *BASE_FLAGS, target.gencode,
            f"-I{kernels_src_dir()}", f"-I{libinfo.find_include_path()}", f"-I{libinfo.find_dlpack_include_path()}",
            *spec.flags, str(tu), "-o", str(out),
            f"-L{libdir}", "-ltvm_ffi", f"-Xlinker=-rpath={libdir}",
        ]

    def build(self, spec: KernelSpec, target: Target, out_dir: Path, log_path: Path) -> None:
        tu = out_dir / "kernel.cu"
        tu.write_text(translation_unit(spec))
        cmd = self.command(spec, target, tu, out_dir / "kernel.so")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log = f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
        (out_dir / "build.log").write_text(log)
        if proc.returncode != 0:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(log)
            raise CompileError(spec.label, proc.stderr or proc.stdout, str(log_path))

    def load(self, spec: KernelSpec, entry_dir: Path):
        import tvm_ffi

        return getattr(tvm_ffi.load_module(str(entry_dir / "kernel.so")), EXPORT_NAME)
