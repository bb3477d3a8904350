"""8-bit activation quantizers: kernelkit (CUDA, Triton) vs eager torch vs torch.compile of the reference.

GB/s counts the minimum traffic (x read once; q and scales written once), compared with the same GPU's
measured device-to-device copy rate. Times are GPU times from CUDA-graph replays (timing.median_ms).
torch.compile compiles the reference for each shape (static shapes: its best case).
Run: ``pytest benches/bench_quant.py`` (GPU), tables land in benches/out/.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kernelkit.ops.quant import reference
from kernelkit.ops.quant.ops import GROUP_IMPLS, TENSOR_IMPLS
from kernelkit.ops.timing import copy_bandwidth_gbs, input_sets, median_ms

pytestmark = pytest.mark.gpu
T_VALUES = (1, 16, 128, 1024, 4096, 16384)
H_VALUES = (2048, 4096, 7168)
GROUP = 128
_group = {name: run for name, _, run in GROUP_IMPLS}
_tensor = {name: run for name, _, run in TENSOR_IMPLS}
torch._dynamo.config.cache_size_limit = 64


@pytest.fixture(scope="module")
def copy_gbs():
    return copy_bandwidth_gbs()


def _compiled(fn):
    compiled = torch.compile(fn, dynamic=False)
    return lambda x, *_: compiled(x)


def _group_sets(t, h, dst, col_major_tma=False):
    def make(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16, generator=g) * 4
        q = torch.empty(t, h, device="cuda", dtype=dst)
        if col_major_tma:
            s = torch.empty(h // GROUP, -(-t // 4) * 4, device="cuda")[:, :t].t()
        else:
            s = torch.empty(t, h // GROUP, device="cuda")
        return x, q, s

    return input_sets(make, t * h * 3)


def _row(t, h, nbytes, timings, copy_gbs, ours=("cuda", "triton")):
    row = {"T": t, "H": h}
    for name, ms in timings.items():
        row[f"{name} µs"] = f"{ms * 1e3:.1f}"
    for name, ms in timings.items():
        row[f"{name} GB/s"] = f"{nbytes / ms / 1e6:.0f}"
    best = min(timings[n] for n in ours)
    row["best/copy"] = f"{nbytes / best / 1e6 / copy_gbs:.0%}"
    row["best vs compile"] = f"{timings['torch.compile'] / best:.2f}x"
    return row


@pytest.mark.parametrize("h", H_VALUES)
@pytest.mark.parametrize("t", T_VALUES)
def bench_per_token_group_quant_fp8(benchmark, record, copy_gbs, t, h):
    fp8 = torch.float8_e4m3fn
    sets = _group_sets(t, h, fp8)
    nbytes = t * h * 2 + t * h + t * (h // GROUP) * 4
    impls = {
        "cuda": lambda x, q, s: _group["cuda-tvm_ffi"](x, q, s, GROUP, 1e-10, False),
        "cuda-nvrtc": lambda x, q, s: _group["cuda-nvrtc"](x, q, s, GROUP, 1e-10, False),
        "triton": lambda x, q, s: _group["triton"](x, q, s, GROUP, 1e-10, False),
        "torch": lambda x, q, s: reference.per_token_group_quant_8bit_ref(x, GROUP, fp8),
        "torch.compile": _compiled(lambda x: reference.per_token_group_quant_8bit_ref(x, GROUP, fp8)),
    }
    timings = {name: median_ms(fn, sets) for name, fn in impls.items()}
    cm_sets = _group_sets(t, h, fp8, col_major_tma=True)
    timings_cm = median_ms(impls["cuda"], cm_sets)
    row = _row(t, h, nbytes, timings, copy_gbs)
    row["cuda col-major TMA µs"] = f"{timings_cm * 1e3:.1f}"
    row["copy GB/s"] = f"{copy_gbs:.0f}"
    record("per_token_group_quant_fp8", row, ours={n: timings[n] for n in ("cuda", "cuda-nvrtc", "triton")},
           peers={n: timings[n] for n in ("torch", "torch.compile")}, nbytes=nbytes)
    benchmark.extra_info.update(row)
    x, q, s = sets[0]
    benchmark.pedantic(lambda: (impls["cuda"](x, q, s), torch.cuda.synchronize()), rounds=20, warmup_rounds=2)


@pytest.mark.parametrize("t, h", ((4096, 7168), (16384, 4096), (16384, 7168)))
def bench_group_quant_launch_variants(record, copy_gbs, t, h):
    """The CUDA kernel's launch tuning: groups per thread (loads in flight) x grid size (one resident wave, a
    grid-stride loop; or one block per GROUPS_PER_BLOCK groups). bf16 -> FP8, group 128."""
    from kernelkit.ops.quant import cuda_impl

    sets = _group_sets(t, h, torch.float8_e4m3fn)
    nbytes = t * h * 3 + t * (h // GROUP) * 4
    row = {"T": t, "H": h}
    for unroll in (1, 2, 4):
        for waves in (1, 0):
            def run(x, q, s, unroll=unroll, waves=waves):
                cuda_impl.group_quant_tvm_ffi(x, q, s, GROUP, 1e-10, False, unroll, waves)

            ms = median_ms(run, sets)
            row[f"{unroll} group(s)/thread, {'1 wave' if waves else 'full grid'}"] = \
                f"{ms * 1e3:.1f} µs = {nbytes / ms / 1e6 / copy_gbs:.0%}"
    record("per_token_group_quant_fp8_launch_variants", row)


@pytest.mark.parametrize("h", (4096, 7168))
@pytest.mark.parametrize("t", (1, 128, 4096, 16384))
def bench_per_token_quant_int8(benchmark, record, copy_gbs, t, h):
    def make(seed):
        x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(seed))
        return x, torch.empty(t, h, device="cuda", dtype=torch.int8), torch.empty(t, 1, device="cuda")

    sets = input_sets(make, t * h * 3)
    nbytes = t * h * 3 + t * 4
    impls = {
        "triton": lambda x, q, s: _group["triton"](x, q, s, h, 1e-10, False),
        "torch": lambda x, q, s: reference.per_token_quant_int8_ref(x),
        "torch.compile": _compiled(lambda x: reference.per_token_quant_int8_ref(x)),
    }
    timings = {name: median_ms(fn, sets) for name, fn in impls.items()}
    row = _row(t, h, nbytes, timings, copy_gbs, ours=("triton",))
    record("per_token_quant_int8", row, ours={"triton": timings["triton"]},
           peers={n: timings[n] for n in ("torch", "torch.compile")}, nbytes=nbytes)
    benchmark.extra_info.update(row)
    x, q, s = sets[0]
    benchmark.pedantic(lambda: (impls["triton"](x, q, s), torch.cuda.synchronize()), rounds=20, warmup_rounds=2)


@pytest.mark.parametrize("dynamic", (True, False), ids=("dynamic", "static"))
@pytest.mark.parametrize("t", (1, 128, 4096, 16384))
def bench_per_tensor_quant_fp8(benchmark, record, copy_gbs, t, dynamic):
    h = 7168

    def make(seed):
        x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(seed))
        return x, torch.empty(t, h, device="cuda", dtype=torch.float8_e4m3fn), torch.full((1,), 0.01, device="cuda")

    sets = input_sets(make, t * h * 3)
    nbytes = t * h * (5 if dynamic else 3)  # the dynamic path reads x twice (amax, then quantize)
    impls = {"triton": lambda x, q, s: _tensor["triton"](x, q, s, 1e-10, dynamic)}
    if not dynamic and importlib.util.find_spec("cutlass") is not None:  # the CuTe DSL kernel, where installed
        impls["cute"] = lambda x, q, s: _tensor["cute"](x, q, s, 1e-10, False)
    ref = (lambda x, s: reference.per_tensor_quant_fp8_ref(x)) if dynamic else reference.per_tensor_quant_fp8_ref
    impls["torch"] = lambda x, q, s: ref(x, s)
    compiled = torch.compile(ref, dynamic=False)
    impls["torch.compile"] = lambda x, q, s: compiled(x, s)
    timings = {name: median_ms(fn, sets) for name, fn in impls.items()}
    row = {"mode": "dynamic" if dynamic else "static"}
    row.update(_row(t, h, nbytes, timings, copy_gbs, ours=tuple(n for n in ("triton", "cute") if n in impls)))
    record("per_tensor_quant_fp8", row, ours={n: t for n, t in timings.items() if not n.startswith("torch")},
           peers={n: t for n, t in timings.items() if n.startswith("torch")}, nbytes=nbytes)
    benchmark.extra_info.update(row)
    x, q, s = sets[0]
    benchmark.pedantic(lambda: (impls["triton"](x, q, s), torch.cuda.synchronize()), rounds=20, warmup_rounds=2)
