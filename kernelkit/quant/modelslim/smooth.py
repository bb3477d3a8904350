"""SmoothQuant smoothing for W8A8 (Xiao et al. 2022, arXiv 2211.10438; msModelSlim's anti-outlier step does the
same before its W8A8 quantizers): activation outliers move into the weights through per-input-channel scales
s, x -> x / s folded into the preceding RMSNorm (or linear), W -> W * s, so the float function is unchanged
and per-token int8 activations lose less to a few large channels.

s_j = amax(|x_j|)^a / amax(|W_:,j|)^(1 - a), with a chosen per group from a grid by the group's output error
under per-token int8 activations and per-channel int8 or int4 weights (SmoothQuant fixes a = 0.5; the identity is a
candidate, so smoothing never makes a group's measured error worse).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _fake_quant(x: torch.Tensor, w: torch.Tensor, weight_bits: int) -> torch.Tensor:
    """x [T, K] @ w [N, K]^T with x rounded to int8 per row and w per output channel to ``weight_bits``
    (symmetric, amax / 127 and amax / 7)."""
    def rows(t, top):
        scale = t.abs().amax(1, keepdim=True).clamp(min=1e-10) / top
        return torch.round(t / scale).clamp(-top - 1, top) * scale
    return rows(x, 127) @ rows(w, 2 ** (weight_bits - 1) - 1).t()


@torch.no_grad()
def smooth_scales(x: torch.Tensor, linears: Sequence[nn.Linear], weight_bits: int = 8, n_grid: int = 10,
                  n_tokens: int = 4096) -> torch.Tensor:
    """The scales s [K] (fp32) for ``linears`` that share the input ``x`` [..., K] (at most ``n_tokens`` rows of
    it, evenly spaced, are scored) under int8 activations and ``weight_bits``-bit weights (8: W8A8, 4: W4A8);
    ones when no migration strength beats leaving the group as it is."""
    xs = x.reshape(-1, x.shape[-1]).float()
    xs = xs[torch.linspace(0, xs.shape[0] - 1, min(n_tokens, xs.shape[0])).long()]
    weight = torch.cat([lin.weight.float() for lin in linears])
    act = xs.abs().amax(0).clamp(min=1e-5)
    wmax = weight.abs().amax(0).clamp(min=1e-5)
    reference = xs @ weight.t()
    best_scales = torch.ones_like(act)
    best = (_fake_quant(xs, weight, weight_bits) - reference).pow(2).mean().item()
    for step in range(n_grid + 1):
        alpha = step / n_grid
        s = (act.pow(alpha) / wmax.pow(1 - alpha)).clamp(min=1e-5)
        s = s / (s.max() * s.min()).sqrt()
        loss = (_fake_quant(xs / s, weight * s, weight_bits) - reference).pow(2).mean().item()
        if loss < best:
            best, best_scales = loss, s
    return best_scales
