"""The DeepSeek-V3 block-FP8 weight format: quantize and dequantize.

weight [N, K] float8_e4m3fn, weight_scale_inv [ceil(N/bn), ceil(K/bk)] float32, where each bn x bk block's
scale = max(amax(block), 1e-10) / 448 (optionally rounded up to a power of two: ``scale_fmt: ue8m0``) and
weight = cast(clamp(w / scale, -448, 448)), dividing in fp32 as DeepSeek-V3's reference and sglang's
``convert_hf_to_fp8.py`` do (``w * (1 / scale)`` differs from them by one code on rounding ties).
Ragged edge blocks (N or K not a multiple of the block) use only the values they contain. Dequantization:
w ~ weight * scale, blockwise.

Source: DeepSeek-V3 (arXiv 2412.19437, section 3.3) and its ``weight_dequant`` in
inference/kernel.py; the same layout sglang, vLLM and transformers' FineGrainedFP8 load.
"""

from __future__ import annotations

import torch

from kernelkit.ops.gemm.reference import dequantize_blocks
from kernelkit.ops.quant.reference import FP8_MAX, cast_8bit, round_up_pow2

AMAX_EPS = 1e-10


ROWS_PER_CHUNK = 2048  # fp32 work space stays ~ 2048 x K x 4 bytes (x a few), whatever N is


def quantize_weight(w: torch.Tensor, block_size: tuple[int, int] = (128, 128),
                    scale_ue8m0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize w [N, K] (any float dtype) to (weight float8_e4m3fn [N, K], weight_scale_inv fp32 blocks).

    Works through the rows in chunks of whole blocks, so temporary fp32 memory is bounded for any N.

    Raises:
        ValueError: w is not 2-D.
    """
    if w.dim() != 2:
        raise ValueError(f"block-FP8 weights must be 2-D, got shape {tuple(w.shape)}")
    bn, bk = block_size
    n, k = w.shape
    q = torch.empty(n, k, dtype=torch.float8_e4m3fn, device=w.device)
    scale = torch.empty(-(-n // bn), -(-k // bk), dtype=torch.float32, device=w.device)
    rows = max(bn, ROWS_PER_CHUNK // bn * bn)
    for start in range(0, n, rows):
        q[start:start + rows], scale[start // bn:(start + rows) // bn] = _quantize_rows(
            w[start:start + rows], block_size, scale_ue8m0)
    return q, scale


def _quantize_rows(w: torch.Tensor, block_size: tuple[int, int], scale_ue8m0: bool):
    bn, bk = block_size
    n, k = w.shape
    nb, kb = -(-n // bn), -(-k // bk)
    padded = torch.zeros(nb * bn, kb * bk, dtype=torch.float32, device=w.device)
    padded[:n, :k] = w
    blocks = padded.view(nb, bn, kb, bk)
    amax = blocks.abs().amax(dim=(1, 3)).clamp(min=AMAX_EPS)
    scale = amax / FP8_MAX
    if scale_ue8m0:
        scale = round_up_pow2(scale)
    q = cast_8bit(blocks / scale[:, None, :, None], torch.float8_e4m3fn)
    return q.view(nb * bn, kb * bk)[:n, :k], scale


def dequantize_weight(weight: torch.Tensor, weight_scale_inv: torch.Tensor,
                      block_size: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """fp32 [N, K] from a block-FP8 weight and its scales."""
    return dequantize_blocks(weight, weight_scale_inv, *block_size)
