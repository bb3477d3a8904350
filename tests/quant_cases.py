"""Shared inputs and comparisons for the quantizer tests."""

from __future__ import annotations

import torch

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
DST = (torch.float8_e4m3fn, torch.int8)


def make_x(m: int, h: int, dtype: torch.dtype, device="cpu", *, seed: int, specials: bool = False,
           row_stride: int | None = None) -> torch.Tensor:
    """Random activations with outliers; optionally NaN/Inf in some rows, and a row stride > h."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    width = row_stride or h
    base = torch.randn(m, width, generator=g) * torch.exp(torch.randn(m, 1, generator=g))
    base[:, ::7] *= 30  # outliers, as real activations have
    if specials and m >= 4:
        base[1, 3] = float("nan")
        base[2, 5] = float("inf")
        base[3, :] = float("-inf")
        base[0, :] = 0.0
    x = base.to(dtype).to(device)
    return x[:, :h] if row_stride else x


def assert_same_q(q: torch.Tensor, q_ref: torch.Tensor) -> None:
    """Bit-exact q, except that a NaN may carry either sign bit."""
    assert q.shape == q_ref.shape and q.dtype == q_ref.dtype
    if q.dtype == torch.float8_e4m3fn:
        nan, nan_ref = torch.isnan(q.float()), torch.isnan(q_ref.float())
        assert torch.equal(nan, nan_ref), "NaN positions differ"
        a, b = q.view(torch.uint8)[~nan], q_ref.view(torch.uint8)[~nan]
    else:
        a, b = q, q_ref
    mismatch = (a != b).sum().item()
    assert mismatch == 0, f"{mismatch} of {a.numel()} quantized values differ"


def assert_same_scales(s: torch.Tensor, s_ref: torch.Tensor) -> None:
    """Scales equal to 1e-6 relative, with NaN where the reference has NaN."""
    torch.testing.assert_close(s.float().cpu(), s_ref.float().cpu(), rtol=1e-6, atol=0, equal_nan=True)
