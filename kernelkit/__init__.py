"""kernelkit: GPU kernels and weight quantization for LLM inference."""

__version__ = "0.1.0"

from kernelkit import _logging  # noqa: E402,F401  (installs the `kernelkit` log handler)
