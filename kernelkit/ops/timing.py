"""Event-timed GPU measurements: medians over CUDA-graph replays, rotating through input sets so that
repeated runs do not measure the L2 cache, and the device's measured copy bandwidth as the roof for
memory-bound kernels.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

L2_FLUSH_BYTES = 256 << 20  # rotate through at least this many input bytes (H100/H200 L2: 50-60 MB)


def input_sets(make: Callable[[int], tuple], bytes_per_set: int, max_sets: int = 16) -> list[tuple]:
    """As many independent input tuples (from ``make(seed)``) as it takes to exceed L2 several times."""
    count = max(2, min(max_sets, -(-L2_FLUSH_BYTES // max(1, bytes_per_set))))
    return [make(seed) for seed in range(count)]


def median_ms(fn: Callable, sets: Sequence[tuple], replays: int = 15) -> float:
    """GPU time in ms of one ``fn(*inputs)``: the median over ``replays`` event-timed replays of a CUDA graph
    that calls ``fn`` once per input set, divided by the number of sets.

    The graph takes Python and launch overhead out of the number (eager calls of small kernels are
    CPU-bound); every set is run once first, so compilation and allocation stay out too.
    """
    for inputs in sets:
        fn(*inputs)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for inputs in sets:
            fn(*inputs)
    graph.replay()
    _settle_clocks(graph)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(replays)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)) / len(sets)


def _settle_clocks(graph: torch.cuda.CUDAGraph, warm_ms: float = 50.0) -> None:
    """Replay for about ``warm_ms`` before timing, so that each measurement starts from the clocks and power
    state its own load sets, not the previous measurement's (seen: a big GEMM timed right after other work
    read up to 10% slower than the same cuBLAS call timed a moment later)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    torch.cuda.synchronize()
    for _ in range(min(500, int(warm_ms / max(start.elapsed_time(end), 1e-3)))):
        graph.replay()


def copy_bandwidth_gbs(nbytes: int = 1 << 30, iters: int = 20) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written.

    Timed eagerly (a 1 GiB copy dwarfs the launch cost): inside a CUDA graph torch's copy becomes a memcpy
    node, which ran at ~2.7 TB/s on an H200 against ~4.25 TB/s for the copy kernel eager torch launches.
    """
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        dst.copy_(src)
        end.record()
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
    return 2 * nbytes / ms / 1e6
