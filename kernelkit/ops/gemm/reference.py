"""Plain-torch reference of the block-scaled FP8 GEMM: dequantize both operands, multiply in float64.

C[m, n] = sum_k (A[m, k] * As[m, k // bk]) * (B[n, k] * Bs[n // bn, k // bk])

Float64 on purpose. An e4m3 value times an fp32 scale has at most 28 significant bits, so both dequantized
operands are exact in float64, and the sum's rounding error (~1e-16 relative) stays far under the output's.
That also makes a row's result independent, in practice, of the other rows of the call: BLAS libraries pick
their reduction order by M, and with fp32 accumulation the differences this caused (1e-7 relative) were then
amplified by the next layer's FP8 activation rounding into different tokens (SmolLM2 fp8-block on CPU: 0.1
nats of logprob between a seeded request alone and beside three others, and another text; 4e-6 and the
same text with float64). It costs about 2x the fp32 reference on a CPU.

Source: DeepSeek-V3 fine-grained FP8 (arXiv 2412.19437, section 3.3); the contract of sglang's
``w8a8_block_fp8_matmul`` (python/sglang/srt/layers/quantization/fp8_kernel.py).
"""

from __future__ import annotations

import torch


def dequantize_blocks(w: torch.Tensor, scales: torch.Tensor, block_n: int, block_k: int,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """w * scale in ``dtype``, with scales [ceil(N/bn), ceil(K/bk)] broadcast over bn x bk blocks of w [N, K]."""
    n, k = w.shape
    nb, kb = scales.shape
    if n == nb * block_n and k == kb * block_k:  # whole blocks: broadcast through a blocked view, no expanded copy
        return (w.to(dtype).view(nb, block_n, kb, block_k) * scales.to(dtype)[:, None, :, None]).view(n, k)
    expanded = scales.to(dtype).repeat_interleave(block_n, 0)[:n].repeat_interleave(block_k, 1)[:, :k]
    return w.to(dtype) * expanded


def w8a8_block_fp8_matmul_ref(a: torch.Tensor, b: torch.Tensor, a_scales: torch.Tensor, b_scales: torch.Tensor,
                              block_size: tuple[int, int], output_dtype: torch.dtype) -> torch.Tensor:
    """Reference block-FP8 matmul. Shapes as :func:`kernelkit.ops.w8a8_block_fp8_matmul`."""
    block_n, block_k = block_size
    a_deq = dequantize_blocks(a, a_scales, 1, block_k, torch.float64)
    return (a_deq @ dequantize_blocks(b, b_scales, block_n, block_k, torch.float64).t()).to(output_dtype)
