"""Which GPUs' tuned launch-config files stand in for one another when a device has none of its own.

The H100 SXM ("NVIDIA H100 80GB HBM3") and the H200 are the same GH100 chip: 132 SMs, 228 KB of shared memory
per SM, the same clocks; only the memory differs (HBM3 at 3.35 TB/s against HBM3e at 4.8). A Triton config
tuned on one is a far better start on the other than an untuned default (benches/RESULTS.md, 2026-12-07: the
fused MoE layer on an H100 with the H200's files). vLLM and sglang look up their files by the exact device name
and otherwise fall back to defaults. The PCIe H100 (114 SMs) is a different part and is not listed.
"""

from __future__ import annotations

SAME_CHIP = (("NVIDIA H100 80GB HBM3", "NVIDIA H200"),)


def devices_to_try(device_name: str) -> tuple[str, ...]:
    """``device_name`` first, then the devices of the same chip whose tuned files may serve it, in ``SAME_CHIP``
    order; a device in no group gets only itself."""
    for group in SAME_CHIP:
        if device_name in group:
            return (device_name, *(d for d in group if d != device_name))
    return (device_name,)
