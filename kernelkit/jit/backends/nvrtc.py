"""CUDA C++ device code compiled at run time by NVRTC through cuda-python's ``cuda.core``.

For machines with a driver but no nvcc. Only ``__global__`` templates can be built this way (no host code),
so sources meant for NVRTC keep to device code and include no CUDA headers. The loaded callable launches the
kernel on torch's current stream: ``fn(grid, block, *args)`` where ``args`` are numpy scalars (pointers as
np.uint64); ``fn.max_active_blocks_per_sm(block_size, dynamic_smem)`` reports its occupancy.
"""

from __future__ import annotations

import json
from pathlib import Path

from kernelkit.jit.arch import Target
from kernelkit.jit.errors import CompileError
from kernelkit.jit.key import source_digest
from kernelkit.jit.spec import KernelSpec, kernels_src_dir


def _defines(spec: KernelSpec) -> list[str | tuple[str, str]]:
    """``-DNAME[=VALUE]`` flags as NVRTC macro definitions. Raises CompileError for any other flag."""
    out: list[str | tuple[str, str]] = []
    for flag in spec.flags:
        if not flag.startswith("-D"):
            raise CompileError(spec.label, f"the NVRTC backend takes only -D flags, got {flag!r}", None)
        name, _, value = flag[2:].partition("=")
        out.append((name, value) if value else name)
    return out


class NvrtcBackend:
    """cuda.core ``Program`` -> cubin -> ``ObjectCode.get_kernel``."""

    name = "nvrtc"

    def unavailable_reason(self) -> str | None:
        try:
            from cuda.core import Program  # noqa: F401
        except ImportError as e:
            return f"cuda.core is not importable ({e}); pip install 'kernelkit[cuda]'"
        try:
            self.versions()
        except Exception as e:  # the libnvrtc shared library itself is missing
            return f"libnvrtc is not loadable ({e}); pip install nvidia-cuda-nvrtc"
        return None

    def versions(self) -> dict[str, str]:
        import cuda.core
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
        return {"nvrtc": f"{major}.{minor}", "cuda.core": cuda.core.__version__}

    def source_digest(self, spec: KernelSpec) -> str:
        src = kernels_src_dir()
        return source_digest(src / spec.source, (src,), src)

    def build(self, spec: KernelSpec, target: Target, out_dir: Path, log_path: Path) -> None:
        from cuda.core import Program, ProgramOptions

        options = ProgramOptions(
            arch=target.name, std="c++17", include_path=str(kernels_src_dir()), lineinfo=True,
            name="kernelkit_nvrtc.cu", define_macro=_defines(spec) or None,
        )
        program = Program(f'#include "{spec.source}"\n', "c++", options)
        try:
            obj = program.compile("cubin", name_expressions=(spec.instantiation,))
        except Exception as e:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(str(e))
            raise CompileError(spec.label, str(e), str(log_path)) from e
        finally:
            program.close()
        (out_dir / "kernel.cubin").write_bytes(bytes(obj.code))
        mapping = {k: v.decode() if isinstance(v, bytes) else v for k, v in obj.symbol_mapping.items()}
        (out_dir / "symbols.json").write_text(json.dumps(mapping))

    def load(self, spec: KernelSpec, entry_dir: Path):
        import torch
        from cuda.core import Device, LaunchConfig, ObjectCode, Stream, launch

        Device(torch.cuda.current_device()).set_current()
        mapping = {k: v.encode() for k, v in json.loads((entry_dir / "symbols.json").read_text()).items()}
        code = ObjectCode.from_cubin((entry_dir / "kernel.cubin").read_bytes(), symbol_mapping=mapping)
        kernel = code.get_kernel(spec.instantiation)

        def run(grid: tuple[int, ...], block: tuple[int, ...], *args) -> None:
            stream = Stream.from_handle(torch.cuda.current_stream().cuda_stream)
            launch(stream, LaunchConfig(grid=grid, block=block), kernel, *args)

        run.max_active_blocks_per_sm = kernel.occupancy.max_active_blocks_per_multiprocessor
        return run
