"""The GPU architecture a kernel is compiled for.

A target is written the way nvcc writes it: ``sm_90a``, ``sm_90``, ``sm_100a``. The suffix matters: ``sm_90a``
enables Hopper-only instructions (wgmma, setmaxnreg) and its cubins do not run anywhere else, so it is a
different cache entry from ``sm_90``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TARGET_RE = re.compile(r"^(?:sm_)?(\d+)\.?(\d)([af]?)$")

# Majors whose kernels we build for the architecture-specific ("a") target. Hopper and Blackwell expose
# their fast paths (wgmma, tcgen05, TMA multicast) only there.
_ARCH_SPECIFIC_MAJORS = {9, 10, 12}


@dataclass(frozen=True, order=True)
class Target:
    """A CUDA compile target such as ``sm_90a``.

    Attributes:
        major, minor: compute capability, e.g. 9 and 0.
        suffix: ``""``, ``"a"`` (architecture-specific) or ``"f"`` (family-specific).
    """

    major: int
    minor: int
    suffix: str = ""

    @property
    def name(self) -> str:
        """The nvcc spelling, e.g. ``sm_90a``."""
        return f"sm_{self.major}{self.minor}{self.suffix}"

    @property
    def gencode(self) -> str:
        """The nvcc flag that builds SASS for exactly this target (no PTX fallback)."""
        return f"-gencode=arch=compute_{self.major}{self.minor}{self.suffix},code={self.name}"

    def __str__(self) -> str:
        return self.name


def parse_target(text: str) -> Target:
    """Parse ``sm_90a``, ``90a``, ``9.0a`` or ``9.0`` into a :class:`Target`.

    Raises:
        ValueError: the text is not a CUDA target.
    """
    m = _TARGET_RE.match(text.strip().lower().replace("compute_", "sm_"))
    if not m:
        raise ValueError(f"not a CUDA target: {text!r} (expected e.g. 'sm_90a' or '9.0a')")
    digits, minor, suffix = m.groups()
    return Target(int(digits), int(minor), suffix)


def target_for_capability(major: int, minor: int) -> Target:
    """The target kernelkit compiles for on a device of compute capability ``major.minor``."""
    return Target(major, minor, "a" if major in _ARCH_SPECIFIC_MAJORS else "")


def device_target(device_index: int | None = None) -> Target | None:
    """The target of a visible CUDA device, read from the device itself; None without a GPU.

    This asks the driver through torch, never an environment default: sglang once compiled for a stale
    ``TVM_FFI_CUDA_ARCH_LIST`` and loaded the wrong cubins.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device_index is None else device_index
    return target_for_capability(*torch.cuda.get_device_capability(index))


def current_target(device_index: int | None = None) -> Target:
    """The target to compile for: ``$KERNELKIT_ARCH`` if set, else the current CUDA device's.

    Raises:
        RuntimeError: there is no GPU and ``KERNELKIT_ARCH`` is not set.
        ValueError: ``KERNELKIT_ARCH`` is not a CUDA target.
    """
    override = os.environ.get("KERNELKIT_ARCH")
    if override:
        return parse_target(override)
    target = device_target(device_index)
    if target is None:
        raise RuntimeError("no CUDA device is visible; set KERNELKIT_ARCH (e.g. sm_90a) to compile without one")
    return target
