"""Event-timed GPU measurements: medians over many runs, rotating through input sets so that repeated runs
do not measure the L2 cache, and the device's measured copy bandwidth as the roof for memory-bound kernels.
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


def median_ms(fn: Callable, sets: Sequence[tuple], warmup: int = 5, iters: int = 50) -> float:
    """Median time in ms of ``fn(*inputs)``, timed with CUDA events, cycling through ``sets``."""
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        inputs = sets[i % len(sets)]
        starts[i].record()
        fn(*inputs)
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda a, b: b.copy_(a), [(src, dst)], iters=20)
    return 2 * nbytes / ms / 1e6
