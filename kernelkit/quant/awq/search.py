"""AWQ's searches on one decoder layer (Lin et al., MLSys 2024, arXiv 2306.00978, section 3.2), as AutoAWQ's
``AwqQuantizer`` and llm-compressor's ``AWQModifier`` run them:

- Scales: for a group of linears sharing an input x (q/k/v after input_layernorm, ...), per input channel
  s = x_mean^r / w_mean^(1-r) (``duo`` scaling; x_mean^r alone without it), normalised by
  sqrt(max(s) * min(s)), for r on a grid of ``n_grid`` ratios in [0, 1); the best s minimises the MSE of the
  group's parent module's output with the linears fake-quantized as (Q(W * s) / s). x_mean: mean |x| per
  channel over the calibration tokens; w_mean: mean over output rows of |W| normalised by each group's max.
- Folding: s divides the preceding RMSNorm's weight (or the preceding linear's output rows) and multiplies the
  linears' input columns, so the float model is unchanged and the quantized one better.
- Clipping: per output row and group, the clipping bound max|w| * (1 - i / n_grid), i < max_shrink * n_grid,
  that minimises the MSE of the row's group-wise dot products with (up to ``n_tokens``) calibration inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kernelkit.quant.awq.format import fake_quantize


@torch.no_grad()
def search_scales(x: torch.Tensor, linears: Sequence[nn.Linear], inspect: Callable[[], torch.Tensor],
                  group_size: int, n_grid: int = 20, duo: bool = True) -> torch.Tensor:
    """The best scales s [K] (fp32) for linears of input ``x`` [T, K]; ``inspect()`` runs the group's parent
    module on the calibration input with the linears as they are at the time. The linears are left as found."""
    x_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(0)
    weight = torch.cat([lin.weight.float() for lin in linears])
    w = weight.abs().reshape(-1, group_size)
    w_mean = (w / (w.amax(1, keepdim=True) + 1e-6)).reshape(weight.shape).mean(0)
    original = inspect().float()
    saved = [lin.weight.data.clone() for lin in linears]
    best, best_scales = float("inf"), torch.ones_like(x_mean)
    for step in range(n_grid):
        r = step / n_grid
        s = (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp(min=1e-4) if duo else x_mean.pow(r).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        for lin, w0 in zip(linears, saved, strict=True):
            lin.weight.data = (fake_quantize(w0.float() * s, group_size) / s).to(w0.dtype)
        loss = (inspect().float() - original).pow(2).mean().item()
        if loss < best:
            best, best_scales = loss, s.clone()
    for lin, w0 in zip(linears, saved, strict=True):
        lin.weight.data = w0
    return best_scales


@torch.no_grad()
def fold_scales(previous: nn.Module, linears: Sequence[nn.Linear], scales: torch.Tensor) -> None:
    """x -> x / s in ``previous`` (an RMSNorm's weight, or a linear's last len(s) output rows and bias), W -> W * s
    in the linears' input columns: the float function is unchanged."""
    if isinstance(previous, nn.Linear):
        rows = slice(previous.out_features - scales.numel(), previous.out_features)
        previous.weight.data[rows] = (previous.weight.data[rows].float() / scales[:, None]).to(previous.weight.dtype)
        if previous.bias is not None:
            previous.bias.data[rows] = (previous.bias.data[rows].float() / scales).to(previous.bias.dtype)
    else:
        previous.weight.data = (previous.weight.data.float() / scales).to(previous.weight.dtype)
    for lin in linears:
        lin.weight.data = (lin.weight.data.float() * scales).to(lin.weight.dtype)


@torch.no_grad()
def search_clip(x: torch.Tensor, weight: torch.Tensor, group_size: int, n_grid: int = 20, max_shrink: float = 0.5,
                n_tokens: int = 512, rows_per_batch: int = 256) -> torch.Tensor:
    """Clipping bounds [N, K/G] (fp32) for ``weight`` [N, K] given its inputs ``x`` [T, K]: AutoAWQ's
    ``_compute_best_clip``, with each group's dot products over the sampled tokens as one batched matmul per
    candidate instead of a broadcast product (the same sums; about 20x less time on the CPU)."""
    n, k = weight.shape
    groups = k // group_size
    x = x.reshape(-1, k)
    x = x[:: max(1, x.shape[0] // n_tokens)][:n_tokens].float()
    feats = x.reshape(-1, groups, group_size).transpose(0, 1)  # [groups, tokens, G]

    def group_dots(w):  # w [rows, groups, G] -> [groups, tokens, rows]
        return torch.bmm(feats, w.permute(1, 2, 0))

    bounds = []
    for start in range(0, n, rows_per_batch):
        w = weight[start:start + rows_per_batch].float().reshape(-1, groups, group_size)
        top = w.abs().amax(-1, keepdim=True)  # [rows, groups, 1]
        reference = group_dots(w)
        best_err = torch.full(top.shape[:2], float("inf"))
        best = top[..., 0].clone()
        for i in range(int(max_shrink * n_grid)):
            bound = top * (1 - i / n_grid)
            q = fake_quantize(w.clamp(-bound, bound).reshape(-1, k), group_size).reshape(w.shape)
            err = (group_dots(q) - reference).pow(2).mean(1).t()  # [rows, groups]
            better = err < best_err
            best_err[better], best[better] = err[better], bound[..., 0][better]
        bounds.append(best)
    return torch.cat(bounds)


def apply_clip(linear: nn.Linear, bounds: torch.Tensor, group_size: int) -> None:
    """Clamp each group of the weight to +-bounds [N, K/G], in place."""
    n, k = linear.weight.shape
    w = linear.weight.data.float().reshape(n, k // group_size, group_size)
    b = bounds[..., None]
    linear.weight.data = torch.maximum(torch.minimum(w, b), -b).reshape(n, k).to(linear.weight.dtype)


def capture_inputs(layer, run, x, modules) -> list[torch.Tensor]:
    """The inputs [samples, seqlen, K] each of ``modules`` sees when ``run(layer, x)`` runs the decoder layer
    (forward pre-hooks; calibration of AWQ and of SmoothQuant smoothing)."""
    seen: dict[int, list] = {id(m): [] for m in modules}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0].detach())) for m in modules]
    try:
        run(layer, x)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(seen[id(m)]) for m in modules]
