"""Programmatic dependent launch (PDL) for kernelkit's Triton kernels on Hopper and later.

A kernel launched with PDL may be scheduled while the kernel before it on the stream is still running. Its
blocks wait in ``griddepcontrol.wait`` until that kernel has finished and flushed its writes. So the launch
latency and block scheduling of each kernel overlap its predecessor's tail instead of following it. In a
decode step of a few hundred small kernels, those gaps add up to several percent of the step.

Each PDL-aware Triton kernel takes a ``USE_PDL`` constexpr and calls ``pdl_start`` before it touches memory:
it waits for its predecessor, then lets its own dependents launch (``griddepcontrol.launch_dependents``).
The wait comes before every load and store, so neither a read of the predecessor's output nor a write
to a buffer that the predecessor still reads can race. Kernels that are not PDL-aware (cuBLAS, torch's, the CUDA C++
quantizer) are ordered as usual. Stream capture keeps the attribute as a programmatic edge, so CUDA graphs get the same
overlap.

Sources: the CUDA C++ Programming Guide, "Programmatic Dependent Launch and Synchronization" (section 4.5),
and Triton's tutorial 11 (``launch_pdl``, ``tl.extra.cuda.gdc_wait``/``gdc_launch_dependents``).
Off by default: ``KERNELKIT_PDL=1`` turns it on (read once per process and device). It stays opt-in until a GPU
run of ``tests/test_pdl.py`` and ``bench_decode_step_pdl`` (benches/bench_serve.py) shows it correct and faster.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


@functools.cache
def enabled(device_index: int) -> bool:
    """Whether kernels on CUDA device ``device_index`` launch with PDL: ``KERNELKIT_PDL=1``, compute capability
    9.0 or later, and not under ``TRITON_INTERPRET=1``. Raises ValueError if ``KERNELKIT_PDL`` is set to
    anything but 0 or 1."""
    setting = os.environ.get("KERNELKIT_PDL", "0")
    if setting not in ("0", "1"):
        raise ValueError(f"KERNELKIT_PDL must be 0 (off, the default) or 1 (on), got {setting!r}")
    if setting == "0" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def launch_kwargs(device: torch.device) -> dict:
    """The launch keywords of a PDL-aware Triton kernel on ``device``: its ``USE_PDL`` constexpr and, when PDL
    is on there and this Triton has the griddepcontrol intrinsics, Triton's ``launch_pdl``."""
    if device.type != "cuda" or not hasattr(tl.extra.cuda, "gdc_wait") or \
            not enabled(device.index if device.index is not None else torch.cuda.current_device()):
        return {"USE_PDL": False}
    return {"USE_PDL": True, "launch_pdl": True}


@triton.jit
def pdl_start(USE_PDL: tl.constexpr):
    """First statement of a PDL-aware kernel: wait for the previous kernel on the stream, then allow the next
    one to launch. Nothing when ``USE_PDL`` is false."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
