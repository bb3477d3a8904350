"""Two signed int4 values per int8 byte along the output dimension: the layout of msModelSlim's W4A8_DYNAMIC
weights (``modelslim_v1/save/ascendv1.py`` packs them so; vllm-ascend's ``w4a8_dynamic.py`` reads them), which
the fused MoE kernel (``kernelkit.ops.moe``) unpacks in registers and the dense W4A8 linear unpacks at load.
Row 2j sits in the low nibble and row 2j + 1 in the high one."""

from __future__ import annotations

import torch


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int4 values (int8 [..., N, K] in [-8, 7]) -> int8 [..., ceil(N/2), K], row 2j in the low nibble and row
    2j + 1 in the high one; an odd last row is paired with zeros. Values outside [-8, 7] keep their low 4 bits."""
    if q.shape[-2] % 2:
        q = torch.cat([q, q.new_zeros(*q.shape[:-2], 1, q.shape[-1])], dim=-2)
    low, high = q[..., 0::2, :].to(torch.int16), q[..., 1::2, :].to(torch.int16)
    return ((low & 0xF) | ((high & 0xF) << 4)).to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: int8 [..., N/2, K] -> int8 [..., N, K] sign-extended to [-8, 7]
    (``rows``: N, to drop the zero row an odd N was padded with)."""
    p = packed.to(torch.int16)
    low, high = (p << 12) >> 12, (p << 8) >> 12
    out = torch.stack([low, high], dim=-2).reshape(*packed.shape[:-2], 2 * packed.shape[-2], packed.shape[-1])
    return out[..., : rows if rows is not None else out.shape[-2], :].to(torch.int8)
