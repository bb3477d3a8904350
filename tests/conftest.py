"""Test set-up: without a GPU, Triton kernels run in its interpreter (GPU tests skip: ../conftest.py).

TRITON_INTERPRET must be set before any ``@triton.jit`` decorator runs, hence here, before test modules
import kernelkit's Triton kernels. Every session compiles into its own kernel cache.
"""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """A fresh kernel cache for the session unless $KERNELKIT_CACHE_DIR names one (scripts/gpu_check.sh points
    it at the kernels it prebuilt in parallel); sm_90a is the target when there is no GPU. Tests of the cache
    itself use their own directories."""
    mp = pytest.MonkeyPatch()
    if "KERNELKIT_CACHE_DIR" not in os.environ:
        mp.setenv("KERNELKIT_CACHE_DIR", str(tmp_path_factory.mktemp("kernel-cache")))
    mp.setenv("KERNELKIT_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    if not HAS_GPU:
        mp.setenv("KERNELKIT_ARCH", "sm_90a")
    yield
    mp.undo()
