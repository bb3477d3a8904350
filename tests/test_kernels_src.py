"""Every CUDA source in kernels_src/ compiles for sm_90a on this (GPU-less) machine.

- each .cu builds with nvcc through the tvm-ffi backend, from a specialization registered for it;
- each .cuh is reached from some .cu (so nvcc compiles it too);
- the NVRTC-compatible kernels build for every template combination the ops can ask for.
"""

import itertools

import pytest
import torch

from kernelkit.jit import ensure_built, parse_target
from kernelkit.jit.key import transitive_sources
from kernelkit.jit.spec import kernels_src_dir
from kernelkit.ops.quant import cuda_impl
from kernelkit.ops.registry import REGISTERED

SM90A = parse_target("sm_90a")
SRC = kernels_src_dir()
CU_FILES = sorted(SRC.glob("*.cu"))


def _registered_specs(backend: str):
    return [spec for op in REGISTERED for spec in op.specs() if spec.backend == backend]


@pytest.mark.slow
@pytest.mark.parametrize("path", CU_FILES, ids=[p.name for p in CU_FILES])
def test_every_cu_file_builds_with_nvcc(path):
    specs = [s for s in _registered_specs("tvm_ffi") if s.source == path.name]
    assert specs, f"{path.name} has no registered specialization, so nothing would ever build it"
    entry, _ = ensure_built(specs[0], SM90A)
    assert (entry / "kernel.so").stat().st_size > 0
    assert "0 bytes spill stores" in (entry / "build.log").read_text()


def test_every_header_is_compiled_by_some_cu_file():
    reached = {p for cu in CU_FILES for p in transitive_sources(cu, (SRC,))}
    headers = {p.resolve() for p in SRC.glob("*.cuh")}
    assert headers <= reached, f"headers no .cu includes: {sorted(h.name for h in headers - reached)}"


COMBOS = list(itertools.product((torch.bfloat16, torch.float16, torch.float32),
                                (torch.float8_e4m3fn, torch.int8), cuda_impl.SUPPORTED_GROUPS, (False, True)))


@pytest.mark.parametrize("x_dtype, q_dtype, group, ue8m0", COMBOS)
def test_quant_kernel_builds_for_every_specialization_with_nvrtc(x_dtype, q_dtype, group, ue8m0):
    entry, _ = ensure_built(cuda_impl.spec("nvrtc", x_dtype, q_dtype, group, ue8m0), SM90A)
    assert (entry / "kernel.cubin").stat().st_size > 0
