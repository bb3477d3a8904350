"""kernelkit's tensor-core layout for 4-bit weights (``kernels_src/w4a16_gemm.cuh``), and its reference.

W [N, K] (y = x @ W^T, as ``nn.Linear``), asymmetric 4-bit with a zero point and a scale per (row, group of G
k): w = (q - z) * s. The layout is written once, after loading (``process_weights_after_loading``):

- ``qweight`` int32 [ceil(N/16), K/64, 32, 4]: per tile of 16 rows and chunk of 64 k, lane l = 4g + t of a warp
  holds 4 int32, int32 j being the A operand of mma.m16n8k16 step j; nibble p of int32 j is row
  g + 8 (p % 2), k 16t + 4j + 2 ((p % 4) // 2) + p // 4 (see the .cuh for why);
- ``zeros`` uint8 and ``scales`` (the activations' 16-bit dtype) [ceil(N/16), K/G, 16].

Rows past N are padding (q = z = s = 0). The interleaving serves the same purpose as Marlin's (Frantar et
al., arXiv 2408.11743): one 16-byte load per lane feeds four mma steps, and the dequantization is two
integer and one fp16x2/bf16x2 instruction per register.

Requires K % 64 == 0 and G % 64 == 0 (the kernel scales each 64-k chunk's fp32 sum by its group's scale).
"""

from __future__ import annotations

import torch

# q [16 tiles + 8h + g, 64 chunk + 16t + 4j + 2a + b] viewed as [tile, h, g, chunk, t, j, a, b]; the layout is
# [tile, chunk, (g, t) = lane, j, (b, a, h) = nibble p = h + 2a + 4b].
_TO_LAYOUT = (0, 3, 2, 4, 5, 7, 6, 1)
_FROM_LAYOUT = (0, 7, 2, 1, 3, 4, 6, 5)


def _shifts(device: torch.device) -> torch.Tensor:
    """Nibble p's bit offset, made on ``device`` (no host copy: the reference may run inside CUDA graph capture)."""
    return 4 * torch.arange(8, device=device, dtype=torch.int32)


def supports(k: int, group_size: int) -> str | None:
    """Why a [N, K] weight with this group size cannot take the layout (None if it can)."""
    if group_size % 64 or k % group_size:
        return f"group size {group_size} is not a multiple of 64 dividing K = {k}"
    return None


def repack_mma(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_size: int,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, zeros, scales) -> the layout's (qweight, zeros, scales).

    Args:
        q: integer [N, K], values 0..15 (W's rows, as ``nn.Linear`` stores them).
        zeros: integer [N, K/G], 0..15. scales: float [N, K/G].
        group_size: G.
        dtype: the scales' dtype in the layout (default: scales'); bf16 or fp16 for the CUDA kernel.

    Raises:
        ValueError: shapes that do not fit, or ``supports`` refusing K and G.
    """
    n, k = q.shape
    if (why := supports(k, group_size)) is not None:
        raise ValueError(f"the tensor-core W4 layout: {why}")
    if tuple(zeros.shape) != (n, k // group_size) or tuple(scales.shape) != (n, k // group_size):
        raise ValueError(f"zeros and scales must be [{n}, {k // group_size}], got {list(zeros.shape)} and "
                         f"{list(scales.shape)}")
    tiles = (n + 15) // 16
    pad = tiles * 16 - n
    qp = torch.nn.functional.pad(q.to(torch.int64), (0, 0, 0, pad))
    nibbles = qp.view(tiles, 2, 8, k // 64, 4, 4, 2, 2).permute(_TO_LAYOUT).reshape(tiles, k // 64, 32, 4, 8)
    packed = (nibbles << _shifts(q.device)).sum(-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    z = torch.nn.functional.pad(zeros.to(torch.uint8), (0, 0, 0, pad)).view(tiles, 16, -1).transpose(1, 2)
    s = torch.nn.functional.pad(scales.to(dtype or scales.dtype), (0, 0, 0, pad)).view(tiles, 16, -1).transpose(1, 2)
    return packed.contiguous(), z.contiguous(), s.contiguous()


def unpack_mma(qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
               n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layout -> (q int32 [N, K], zeros int32 [N, K/G], scales [N, K/G]): ``repack_mma``'s inverse."""
    tiles, chunks = qweight.shape[:2]
    k = 64 * chunks
    nibbles = ((qweight[..., None] >> _shifts(qweight.device)) & 15).view(tiles, chunks, 8, 4, 4, 2, 2, 2)
    q = nibbles.permute(_FROM_LAYOUT).reshape(tiles * 16, k)
    z = zeros.transpose(1, 2).reshape(tiles * 16, -1)[:n].to(torch.int32)
    s = scales.transpose(1, 2).reshape(tiles * 16, -1)[:n]
    return q[:n], z, s


def dequantize_mma_ref(qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
    """W [N, K] in fp32: (q - z) * s."""
    q, z, s = unpack_mma(qweight, zeros, scales, n)
    group = q.shape[1] // z.shape[1]
    return (q - z.repeat_interleave(group, 1)).float() * s.float().repeat_interleave(group, 1)


def w4a16_mma_gemm_ref(x: torch.Tensor, qweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
                       n: int) -> torch.Tensor:
    """y [M, N] = x [M, K] @ W^T in fp32, returned in x's dtype: the semantics every implementation meets."""
    return (x.float() @ dequantize_mma_ref(qweight, zeros, scales, n).t()).to(x.dtype)
