#!/usr/bin/env bash
# Build, check and time kernelkit on a GPU machine (through the device tool), in one call.
#   scripts/gpu_check.sh tests   - the tests that exercise the GPU (every kernel vs its torch reference, the engine
#                                  with its Triton kernels), SASS checks. TESTS=... and PYTEST_K=... narrow it.
#   scripts/gpu_check.sh bench   - benches/ (quantizers, GEMM, JIT compile/load, serving); tables under $OUT
#                                  BENCHES=benches/bench_serve.py and PYTEST_K=... narrow it.
#   scripts/gpu_check.sh tune    - tune the Triton block-FP8 GEMM; configs under $OUT (commit them).
#                                  TUNE_ARGS="7168,16384 --m 4096" narrows it.
#   scripts/gpu_check.sh tune-moe - tune the Triton fused MoE (bf16, int8 W8A8, int4 W4A8); configs under $OUT.
#   scripts/gpu_check.sh profile - a batch-1 decode step of the Llama-3-8B-shaped engine, bf16 and fp8-block,
#                                  eagerly: GPU kernels by time and host Python by time (scripts/profile_decode.py).
# Carry .whl and .whl-cute (../shared/device/fetch-wheels.sh fetches them); for the serving benches carry .whl and
# .whl-serve instead (scripts/fetch_serve_wheels.sh; .whl-cute does not fit beside it in 64 MiB).
# Logs and tables go to $OUT. LIMIT_S caps pytest (SIGINT, so the tables gathered so far are still written).
# PREBUILD=0 skips building the tvm-ffi specializations first (for runs that use none: the Triton MoE, serving).
set -uo pipefail
mode=${1:-tests}
OUT=${OUT:-/tmp/kk-out}
mkdir -p "$OUT"
shopt -s nullglob
wheels=(.whl/*.whl .whl-cute/*.whl .whl-serve/*.whl)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}" 2>&1 | grep -v WARNING
export PYTHONPATH="$PWD/scripts/gpu:$PWD" PYTHONUNBUFFERED=1
# NVLink multicast stays off in every process (the device notes: it can take a shared host's GPUs down)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# kernelkit runs uninstalled from the working tree here; give it the metadata an install would, so its entry
# points (the built-in schemes in the kernelkit.quant group) are found
python3 - <<'PY'
import pathlib, re, tomllib
project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
version = re.search(r'__version__ = "([^"]+)"', pathlib.Path("kernelkit/__init__.py").read_text())[1]
meta = pathlib.Path(f"/tmp/site/kernelkit-{version}.dist-info")
meta.mkdir(parents=True, exist_ok=True)
(meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kernelkit\nVersion: {version}\n")
(meta / "entry_points.txt").write_text("".join(
    f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items()) + "\n"
    for group, eps in project["entry-points"].items()))
PY
export KERNELKIT_CACHE_DIR=/tmp/kk-cache KERNELKIT_MAX_JOBS=16 KERNELKIT_BENCH_OUT="$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
python3 -m kernelkit info 2>&1 | tee "$OUT/info.txt" | tail -n 25

prebuild() {  # every tvm-ffi specialization the GPU tests use, 16 nvcc jobs at a time
  python3 - <<'PY'
import itertools, sys, time
from concurrent.futures import ThreadPoolExecutor
import torch
from kernelkit.jit import current_target, ensure_built
from kernelkit.ops.quant import cuda_impl
specs = [cuda_impl.spec("tvm_ffi", *c) for c in itertools.product(
    (torch.bfloat16, torch.float16, torch.float32), (torch.float8_e4m3fn, torch.int8),
    cuda_impl.SUPPORTED_GROUPS, (False, True))]
specs += [cuda_impl.spec("tvm_ffi", torch.bfloat16, torch.float8_e4m3fn, 128, False, u) for u in (1, 2, 4)]
specs += [cuda_impl.spec("tvm_ffi", torch.float32, torch.int8, 64, False, u) for u in (1, 2, 4)]
from kernelkit.ops.w4a16 import cuda_impl as w4
specs += [w4.gemm_spec(d, g, *c) for d in (torch.bfloat16, torch.float16) for g in w4.GROUPS for c in w4.launch_configs(g)]
sys.path[:0] = ["benches", "tests"]
from bench_w4a16 import _sweep
from test_w4a16_mma import LAUNCH_CONFIGS
specs += [w4.gemm_spec(torch.bfloat16, 128, *c) for m in (1, 16) for c in _sweep(m)]
specs += [w4.gemm_spec(torch.bfloat16, 128, *c) for c in LAUNCH_CONFIGS]
specs += [w4.dequant_spec(d) for d in (torch.bfloat16, torch.float16)]
specs = list(dict.fromkeys(specs))
t0 = time.time()
with ThreadPoolExecutor(16) as pool:
    built = sum(b for _, b in pool.map(lambda s: ensure_built(s, current_target()), specs))
print(f"prebuilt {built} of {len(specs)} tvm-ffi specializations in {time.time() - t0:.0f} s")
PY
}

sass_check() {  # 16-byte loads, no local memory, hardware FP8 conversion in the main specialization
  entry=$(dirname "$(grep -l 'kk::bf16_t, kk::e4m3_t, 128, false, 4>' /tmp/kk-cache/sm_90a/tvm_ffi/*/manifest.json | head -n 1)")
  cuobjdump -sass "$entry/kernel.so" > "$OUT/sass.txt" 2>&1
  echo "SASS of bf16->fp8 group 128: 16-byte loads=$(grep -cE 'LDG.E.*128' "$OUT/sass.txt")" \
       "local memory=$(grep -cE 'LDL|STL' "$OUT/sass.txt") F2FP=$(grep -c 'F2FP' "$OUT/sass.txt")" \
       "SHFL=$(grep -c 'SHFL' "$OUT/sass.txt") stores=$(grep -oE 'STG[.A-Z0-9]*' "$OUT/sass.txt" | sort | uniq -c | tr '\n' ' ')"
}

torch_cuda_vs_cpu() {  # where torch's own CUDA kernels differ from its CPU evaluation of the reference
  python3 - <<'PY'
import torch
g = torch.Generator().manual_seed(0)
x = (torch.randn(4096, 4096, generator=g) * 4).to(torch.bfloat16).float()
s = x.view(4096, 32, 128).abs().amax(-1, keepdim=True) / 448
y_cpu = (x.view(4096, 32, 128) / s)
y_gpu = (x.cuda().view(4096, 32, 128) / s.cuda()).cpu()
print("torch x/s: CUDA vs CPU values differing:", (y_cpu != y_gpu).sum().item(), "of", y_cpu.numel())
yc = y_cpu.clamp(-448, 448)
f8_cpu = yc.to(torch.float8_e4m3fn).view(torch.uint8)
f8_gpu = yc.cuda().to(torch.float8_e4m3fn).view(torch.uint8).cpu()
print("torch fp32->fp8 cast: CUDA vs CPU values differing:", (f8_cpu != f8_gpu).sum().item())
PY
}

case "$mode" in
  tune)
    timeout -s INT ${LIMIT_S:-570} python3 scripts/tune_gemm.py ${TUNE_ARGS:-} 2>&1 | tee -a "$OUT/tune.txt" | tail -n 40
    tar czf "$OUT/configs.tgz" -C kernelkit/ops/gemm configs ;;
  tune-moe)  # MOE_DTYPES="bf16 int8_w8a8 int4_w4a8"; configs in $OUT/moe-configs.tgz (commit them)
    for dtype in ${MOE_DTYPES:-bf16 int8_w8a8 int4_w4a8}; do
      timeout -s INT ${LIMIT_S:-180} python3 -m kernelkit tune moe --dtype "$dtype" ${TUNE_ARGS:-} \
        --out "$OUT/moe-configs" 2>&1 | tee -a "$OUT/tune-moe.txt" | grep -E "^T=[0-9]+:|wrote|Error"
    done
    tar czf "$OUT/moe-configs.tgz" -C "$OUT" moe-configs ;;  # vLLM's file names have '=' and ',': one archive
  profile)
    for flag in "" --fp8; do
      timeout -s INT ${LIMIT_S:-280} python3 scripts/profile_decode.py $flag --out "$OUT" 2>&1 | tail -n 45
    done ;;
  tests)
    [ "${PREBUILD:-1}" = 1 ] && prebuild 2>&1 | tail -n 1
    gpu_tests="tests/test_quant_gpu.py tests/test_gemm_gpu.py tests/test_serve_gpu.py tests/test_quant_triton.py
      tests/test_layer_ops.py tests/test_serve_attention.py tests/test_gemm.py tests/test_w4a16.py tests/test_w4a16_mma.py
      tests/test_moe_align.py tests/test_fused_moe.py tests/test_qwen3_moe.py tests/test_int8_gemm.py
      tests/test_modelslim_w8a8.py tests/test_modelslim_w4a8.py tests/test_modelslim_checkpoint.py tests/test_bench_cli.py tests/test_tensor_parallel_gpu.py tests/test_pdl.py"
    timeout -s INT ${LIMIT_S:-570} python3 -m pytest ${TESTS:-$gpu_tests} ${PYTEST_K:+-k "$PYTEST_K"} -q --maxfail=15 --durations=8 --timeout=90 ${PYTEST_V:-} -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt" | tail -n 40
    sass_check ;;
  bench)
    [ "${PREBUILD:-1}" = 1 ] && prebuild 2>&1 | tail -n 1
    torch_cuda_vs_cpu 2>&1 | tee "$OUT/torch_cuda_vs_cpu.txt"
    if [ -n "${NCU:-}" ]; then
      ncu --section SpeedOfLight --section Occupancy -k regex:per_token_group_quant_8bit_kernel -c 1 \
        python3 scripts/profile_quant.py > "$OUT/ncu.txt" 2>&1
      grep -E "Memory Throughput|DRAM Throughput|Duration|Achieved Occupancy|Registers Per" "$OUT/ncu.txt"
    fi
    timeout -s INT ${LIMIT_S:-570} python3 -m pytest ${BENCHES:-benches} ${PYTEST_K:+-k "$PYTEST_K"} -m "${BENCH_MARK:-not slow}" -q -p no:cacheprovider --benchmark-disable-gc \
      --benchmark-json="$OUT/bench.json" 2>&1 \
      | tee "$OUT/bench.txt" | tail -n 80 ;;
esac
