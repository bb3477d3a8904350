"""Block-wise FP8 GEMM through cuBLAS (``torch._scaled_mm`` with 1x128 activation and 128x128 weight scales).

Support and correctness vary across torch versions and shapes (it fails at M = 1 and for scale columns that
are not 16-byte aligned; torch PR #166752 fixed silent wrong results when (K / 128) % 4 != 0), so each
(N, K, small-M, scale alignment) class is probed once on the real call:
the cuBLAS result is compared with the Triton kernel's, and the class is used only if they agree. A class that
raises or disagrees is remembered and skipped, with one logged warning.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("kernelkit.ops")

_verdicts: dict[tuple, bool] = {}


def _class(a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor, block_size: tuple[int, int]) -> tuple:
    # cuBLAS refused column-major activation scales whose columns are not 16-byte aligned (M = 2 on an H200,
    # after M = 4 and 8 had passed): the alignment is part of the class
    return (b.shape[0], a.shape[1], a.shape[0] < 16, a_scales.stride(1) % 4 == 0, block_size, a.device.index)


def unsupported(a, b, a_scales, block_size) -> str | None:
    """Why cuBLAS block-wise cannot take this call (None if it may)."""
    if tuple(block_size) != (128, 128):
        return "cuBLAS block-wise scaling is 1x128 / 128x128 only"
    if a.shape[1] % 128 or b.shape[0] % 16:
        return "K must be a multiple of 128 and N of 16"  # a ragged last N block (N = 2112) is probed like any
    if a_scales.stride(0) != 1:
        return "activation scales must be column-major"
    if _verdicts.get(_class(a, b, a_scales, block_size)) is False:
        return "probed earlier: unsupported or wrong for this shape class"
    return None


def _scaled_mm(a, b, a_scales, b_scales, out_dtype):
    return torch._scaled_mm(a, b.t(), scale_a=a_scales, scale_b=b_scales.t(), out_dtype=out_dtype)


def matmul(a, b, a_scales, b_scales, block_size, out_dtype: torch.dtype, check) -> torch.Tensor:
    """cuBLAS's [M, N] result; the first call of a shape class is checked against ``check()`` (the Triton
    kernel's result), which is returned instead when cuBLAS raises or disagrees."""
    key = _class(a, b, a_scales, block_size)
    try:
        result = _scaled_mm(a, b, a_scales, b_scales, out_dtype)
    except RuntimeError as e:  # raised on the host before any launch, so also safe inside a graph capture
        _verdicts[key] = False
        log.warning("w8a8_block_fp8_matmul: cuBLAS block-wise unsupported for M=%d N=%d K=%d: %s", a.shape[0],
                    key[0], key[1], str(e).splitlines()[0])
        return check()
    if key in _verdicts:
        return result
    expected = check()
    agree = torch.allclose(result.float(), expected.float(), rtol=2e-2, atol=1e-2)
    _verdicts[key] = agree
    if not agree:
        log.warning("w8a8_block_fp8_matmul: cuBLAS block-wise disagrees with the Triton kernel for N=%d K=%d; "
                    "not using it for this shape", key[0], key[1])
    return result if agree else expected
