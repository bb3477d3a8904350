"""Where a batch-1 decode step of the Llama-3-8B-shaped engine spends its time, eagerly (scripts/gpu_check.sh
profile): the GPU kernels by total time (torch.profiler), grouped by kernel class into a bar chart
(``decode_breakdown_{bf16,fp8}.png`` and ``.json``: µs a step per class), and the host-side Python by own time
(cProfile).

usage: python scripts/profile_decode.py [--fp8] [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
from serve_models import LLAMA3_8B, make_model_dir  # noqa: E402

from kernelkit.serve import LLM, SamplingParams  # noqa: E402


def _host_us(fn, calls: int = 2000) -> float:
    """Host microseconds per call of fn (launches only; the GPU runs behind)."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - t0
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def dispatch_costs() -> str:
    """Host cost of one small op through each layer of dispatch: torch's own op, our Triton launch called
    directly, the same launch behind ``torch.library.custom_op``, and kernelkit's op (``kernelkit.ops.library``),
    with grad off (inference_mode) and on."""
    from kernelkit.ops.layers import triton_impl
    from kernelkit.ops.layers.ops import silu_and_mul

    x = torch.randn(1, 8192, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(1, 4096, device="cuda", dtype=torch.bfloat16)

    @torch.library.custom_op("kkprofile::silu_and_mul", mutates_args=())
    def via_custom_op(t: torch.Tensor) -> torch.Tensor:
        result = t.new_empty(t.shape[0], t.shape[1] // 2)
        triton_impl.silu_and_mul(t, result)
        return result

    rows = [("torch.nn.functional.silu (aten)", lambda: torch.nn.functional.silu(x)),
            ("Triton silu_and_mul launch, direct", lambda: triton_impl.silu_and_mul(x, out)),
            ("same launch behind torch.library.custom_op", lambda: via_custom_op(x)),
            ("kernelkit::silu_and_mul, grad mode on", lambda: silu_and_mul(x))]
    lines = [f"{name}: {_host_us(fn):.1f} us/call" for name, fn in rows]
    with torch.inference_mode():
        lines.append(f"kernelkit::silu_and_mul, inference_mode: {_host_us(lambda: silu_and_mul(x)):.1f} us/call")
    threads = ", ".join(t.name for t in threading.enumerate())
    return "\n".join([*lines, f"threads: {threads}; switch interval {sys.getswitchinterval()} s"]) + "\n"


# kernel name -> class, first match wins (quantizers before GEMMs: "w8a8" names both)
KERNEL_CLASSES = (
    ("attention", r"attn|attention|paged|flash|_decode_split|_decode_reduce|_prefill_kernel"),
    ("activation quant", r"quant"),
    ("norm", r"norm"),
    ("rotary + KV store", r"rotary|rope|kv_|store|reshape_and_cache"),
    ("GEMM", r"gemm|gemv|cutlass|xmma|nvjet|matmul|scaled_mm|splitk|split_k|_mm_|cublas|sm90|w8a8|w4a16"),
    ("SiLU and mul", r"silu|act_and_mul|swiglu"),
)


def kernel_class(name: str) -> str:
    """The class a GPU kernel's name falls in (``KERNEL_CLASSES``), else "other (copies, elementwise)"."""
    lower = name.lower()
    return next((cls for cls, pattern in KERNEL_CLASSES if re.search(pattern, lower)), "other (copies, elementwise)")


def breakdown(prof, steps: int) -> dict[str, float]:
    """µs a step per kernel class, from a CUDA-only torch.profiler run over ``steps`` decode steps."""
    classes: dict[str, float] = {}
    for event in prof.key_averages():
        if event.device_type != torch.autograd.DeviceType.CUDA or event.device_time_total <= 0:
            continue
        cls = kernel_class(event.key)
        classes[cls] = classes.get(cls, 0.0) + event.device_time_total / steps
    return dict(sorted(classes.items(), key=lambda kv: -kv[1]))


def plot_breakdown(classes: dict[str, float], title: str, path: Path) -> None:
    """A horizontal bar chart of µs a step per kernel class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(classes) + 1.2))
    names, values = list(classes)[::-1], list(classes.values())[::-1]
    ax.barh(names, values)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
    ax.set_xlabel("GPU µs per decode step (eager)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp8", action="store_true", help="the fp8-block checkpoint (default bf16)")
    parser.add_argument("--steps", type=int, default=8, help="decode steps profiled")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the report")
    args = parser.parse_args()
    name = "fp8" if args.fp8 else "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model_dir(Path(tmp) / "llama3-8b", LLAMA3_8B, args.fp8)
        llm = LLM(str(model), load_format="dummy", enforce_eager=True, max_num_seqs=8)
    engine = llm.engine
    engine.add_request("p", list(range(100, 612)), SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
    for _ in range(16):  # prefill, then decode steps until every kernel is compiled
        engine.step()
    torch.cuda.synchronize()
    report = io.StringIO()
    report.write("# host cost of one small op per dispatch layer\n" + dispatch_costs() + "\n")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
    report.write(f"# {name}: GPU kernels over {args.steps} decode steps (context ~530 tokens)\n")
    report.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
    classes = breakdown(prof, args.steps)
    report.write(f"\n# {name}: GPU µs per decode step by kernel class (total {sum(classes.values()):.0f})\n")
    report.write("".join(f"{cls:32s} {us:8.1f}\n" for cls, us in classes.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"decode_breakdown_{name}.json").write_text(json.dumps(classes, indent=1) + "\n")
    plot_breakdown(classes, f"Llama-3-8B shapes, {name}, batch 1, context ~530: {torch.cuda.get_device_name()}",
                   args.out / f"decode_breakdown_{name}.png")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        engine.step()
    torch.cuda.synchronize()
    profiler.disable()
    report.write(f"\n# {name}: host Python over {args.steps} decode steps\n")
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumtime").print_stats(35)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"profile_{name}.txt").write_text(report.getvalue())
    print(report.getvalue()[:6000])


if __name__ == "__main__":
    main()
