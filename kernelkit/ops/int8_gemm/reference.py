"""W8A8 int8 GEMM with per-token activation scales and per-channel weight scales, in plain torch (the
definition): y = (a_q @ w_q^T, accumulated exactly) * scale_a * scale_b^T (SmoothQuant's W8A8, arXiv
2211.10438; the product sglang's ``int8_scaled_mm`` and vLLM's ``cutlass_scaled_mm`` compute)."""

from __future__ import annotations

import torch


def int8_scaled_mm_ref(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                       out_dtype: torch.dtype, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a int8 [M, K], b int8 [N, K], scale_a fp32 [M, 1], scale_b fp32 [N, 1] -> [M, N] in ``out_dtype``.
    The int products are summed exactly (float64 holds every sum of K < 2^38 products of int8s)."""
    return scale_output(a.double() @ b.double().t(), scale_a, scale_b, out_dtype, bias)


def scale_output(acc: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, out_dtype: torch.dtype,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """The epilogue: exact integer sums acc [M, N] (int32 or float64) times scale_a [M, 1] and scale_b [N, 1]
    in fp32, plus bias, in ``out_dtype``."""
    out = acc.float() * scale_a.float().reshape(-1, 1) * scale_b.float().reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)
