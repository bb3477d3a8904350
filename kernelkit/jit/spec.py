"""What one compiled kernel is: its source, entry point, template arguments and flags."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


def kernels_src_dir() -> Path:
    """The directory of CUDA sources: ``kernels_src/`` in a checkout, ``kernelkit/_kernels_src`` installed."""
    checkout = Path(__file__).resolve().parents[2] / "kernels_src"
    if checkout.is_dir():
        return checkout
    installed = importlib.util.find_spec("kernelkit._kernels_src")  # a namespace package: sources only
    return Path(next(iter(installed.submodule_search_locations)))


@dataclass(frozen=True)
class KernelSpec:
    """One specialization of one kernel, for one backend.

    Attributes:
        name: kernel family name, e.g. ``per_token_group_quant_8bit``.
        backend: ``tvm_ffi``, ``nvrtc`` or ``cute``.
        source: a file under ``kernels_src/`` (CUDA backends) or a Python module (``cute``).
        entry: the C++ template (host launcher for ``tvm_ffi``, ``__global__`` kernel for ``nvrtc``) or
            the module attribute that builds the CuTe kernel.
        template_args: C++ template arguments (or CuTe builder arguments), as source text.
        flags: extra compiler flags.
    """

    name: str
    backend: str
    source: str
    entry: str
    template_args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``name<args>``, for logs and errors."""
        return f"{self.name}<{', '.join(self.template_args)}>" if self.template_args else self.name

    @property
    def instantiation(self) -> str:
        """The C++ name of the specialised entry, e.g. ``kk::launch<bf16_t, 128>``."""
        return f"{self.entry}<{', '.join(self.template_args)}>" if self.template_args else self.entry
