"""Plain-torch reference of the block-scaled FP8 GEMM: dequantize both operands, multiply in fp32.

C[m, n] = sum_k (A[m, k] * As[m, k // bk]) * (B[n, k] * Bs[n // bn, k // bk])

Source: DeepSeek-V3 fine-grained FP8 (arXiv 2412.19437, section 3.3); the contract of sglang's
``w8a8_block_fp8_matmul`` (python/sglang/srt/layers/quantization/fp8_kernel.py).
"""

from __future__ import annotations

import torch


def dequantize_blocks(w: torch.Tensor, scales: torch.Tensor, block_n: int, block_k: int) -> torch.Tensor:
    """fp32 w * scale, with scales [ceil(N/bn), ceil(K/bk)] broadcast over bn x bk blocks of w [N, K]."""
    n, k = w.shape
    expanded = scales.repeat_interleave(block_n, 0)[:n].repeat_interleave(block_k, 1)[:, :k]
    return w.float() * expanded


def w8a8_block_fp8_matmul_ref(a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor, b_scales: torch.Tensor,
                              block_size: tuple[int, int], output_dtype: torch.dtype) -> torch.Tensor:
    """Reference block-FP8 matmul. Shapes as :func:`kernelkit.ops.w8a8_block_fp8_matmul`."""
    block_n, block_k = block_size
    a_deq = dequantize_blocks(a, a_scales, 1, block_k)
    return (a_deq @ dequantize_blocks(b, b_scales, block_n, block_k).t()).to(output_dtype)
