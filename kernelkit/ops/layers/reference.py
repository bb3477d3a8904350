"""Plain-torch references of the fused layer ops; the CPU path and the definition the Triton kernels match.

- rms_norm: weight * (x / sqrt(mean(x^2) + eps)), computed in fp32 and cast back before the weight multiply,
  as transformers' LlamaRMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467). With a residual, x + residual is
  formed first (in x's dtype) and also returned, as vLLM's fused_add_rms_norm.
- silu_and_mul: silu(x[..., :d]) * x[..., d:] (the SwiGLU MLP gate, Shazeer 2020, arXiv 2002.05202).
- rotary: x * cos + rotate_half(x) * sin over the last dim (RoFormer, arXiv 2104.09864; HF's rotate-half).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float,
                 residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if residual is not None:
        x = x + residual
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * normed, (x if residual is not None else None)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]
