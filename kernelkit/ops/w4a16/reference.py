"""Plain-torch reference of the W4A16 GEMM on AutoAWQ's GEMM layout: dequantize, multiply in fp32.

y[m, n] = sum_k x[m, k] * (q[k, n] - zero[k // G, n]) * scale[k // G, n], with q and zero the 4-bit values of
``qweight`` int32 [K, N/8] and ``qzeros`` int32 [K/G, N/8] (nibble i of int32 column c is column 8c +
[0, 2, 4, 6, 1, 3, 5, 7][i]) and ``scales`` [K/G, N]. Source: AutoAWQ ``WQLinear_GEMM`` / ``dequantize_gemm``;
the contract of vLLM's ``awq_gemm`` (which also returns x @ W, W [K, N]).
"""

from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a packed int32 holds column 8c + AWQ_ORDER[i]


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, N/8] in AutoAWQ's nibble order -> int32 [R, N] of values 0..15 in column order."""
    shifts = 4 * torch.arange(8, device=packed.device, dtype=torch.int32)  # made there: CUDA-graph capturable
    nibbles = (packed[..., None] >> shifts) & 15  # [R, N/8, 8]: nibble i = 4a + b is column 2b + a = AWQ_ORDER[i]
    return nibbles.view(*nibbles.shape[:-1], 2, 4).transpose(-1, -2).reshape(packed.shape[0], -1)


def awq_dequantize_ref(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                       group_size: int) -> torch.Tensor:
    """W [K, N] in fp32."""
    q = unpack_awq(qweight).float()
    zeros = unpack_awq(qzeros).float().repeat_interleave(group_size, 0)
    return (q - zeros) * scales.float().repeat_interleave(group_size, 0)


def awq_gemm_ref(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 group_size: int) -> torch.Tensor:
    """x [M, K] -> [M, N] in x's dtype (fp32 accumulation)."""
    return (x.float() @ awq_dequantize_ref(qweight, qzeros, scales, group_size)).to(x.dtype)
