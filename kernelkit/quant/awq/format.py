"""Asymmetric 4-bit group quantization of weights and the two checkpoint layouts people have.

Quantization (AutoAWQ's ``pseudo_quantize_tensor``; the AWQ paper, Lin et al., MLSys 2024, arXiv
2306.00978), per row n and group g of ``group_size`` columns:
    scale = max(max - min, 1e-5) / 15,  zero = clamp(-round(min / scale), 0, 15),
    q = clamp(round(w / scale) + zero, 0, 15),  w ~ (q - zero) * scale.
(AWQ's clipping, ``search.py``, clamps the weight before this.)

AutoAWQ GEMM (``WQLinear_GEMM``): ``qweight`` int32 [K, N/8], ``qzeros`` int32 [K/G, N/8], ``scales`` fp16
[K/G, N]; nibble i (bits 4i..4i+3) of int32 column c holds output column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i].

compressed-tensors ``pack-quantized`` (``pack_to_int32``/``unpack_from_int32``): values stored signed, q - 8 and
zero - 8 in [-8, 7], offset back by +8 into nibbles; ``weight_packed`` int32 [N, ceil(K/8)] with element 8j + i in
nibble i (sequential), ``weight_zero_point`` int32 [ceil(N/8), K/G] packed the same way along N,
``weight_scale`` [N, K/G], ``weight_shape`` int64 [2]. llm-compressor's AutoAWQ conversion makes the same
shift of q and zero by 8, so (q - zero) * scale is unchanged.
"""

from __future__ import annotations

import torch

from kernelkit.ops.w4a16.reference import AWQ_ORDER

_SHIFTS = torch.arange(8, dtype=torch.int32) * 4


def quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (q uint8 [N, K] in [0, 15], scales fp32 [N, K/G], zeros uint8 [N, K/G] in [0, 15]).

    Raises:
        ValueError: w is not 2-D or ``group_size`` does not divide K.
    """
    if w.dim() != 2 or w.shape[1] % group_size:
        raise ValueError(f"AWQ: weight of shape {list(w.shape)} is not [N, K] with K a multiple of the group size "
                         f"{group_size}")
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    hi, lo = g.amax(-1), g.amin(-1)
    scales = (hi - lo).clamp(min=1e-5) / 15
    zeros = (-torch.round(lo / scales)).clamp(0, 15)
    q = (torch.round(g / scales[..., None]) + zeros[..., None]).clamp(0, 15)
    return q.reshape(n, k).to(torch.uint8), scales, zeros.to(torch.uint8)


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(q - zero) * scale: [N, K] in ``dtype`` from q [N, K], scales and zeros [N, K/G]."""
    n, k = q.shape
    g = q.to(dtype).reshape(n, k // group_size, group_size)
    return ((g - zeros.to(dtype)[..., None]) * scales.to(dtype)[..., None]).reshape(n, k)


def fake_quantize(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """w quantized and dequantized again, in w's dtype (what calibration measures its losses on)."""
    q, scales, zeros = quantize(w, group_size)
    return dequantize(q, scales, zeros, group_size).to(w.dtype)


def _pack_rows(u: torch.Tensor, order=tuple(range(8))) -> torch.Tensor:
    """uint8 nibbles [R, C] (C a multiple of 8) -> int32 [R, C/8]; nibble i of column c holds element 8c + order[i]."""
    r, c = u.shape
    cols = u.reshape(r, c // 8, 8)[..., list(order)].to(torch.int32)
    return (cols << _SHIFTS.to(u.device)).sum(-1, dtype=torch.int32)


def _unpack_rows(p: torch.Tensor, order=tuple(range(8))) -> torch.Tensor:
    """The inverse of :func:`_pack_rows`: int32 [R, C/8] -> uint8 [R, C]."""
    nibbles = (p[..., None] >> _SHIFTS.to(p.device)) & 15  # [R, C/8, 8], nibble i = element order[i]
    out = torch.empty_like(nibbles)
    out[..., list(order)] = nibbles
    return out.reshape(p.shape[0], -1).to(torch.uint8)


def pack_autoawq(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> dict[str, torch.Tensor]:
    """AutoAWQ GEMM tensors from q [N, K], scales, zeros [N, K/G]. Raises ValueError unless N % 8 == 0."""
    if q.shape[0] % 8:
        raise ValueError(f"AutoAWQ GEMM packs 8 output columns per int32; N = {q.shape[0]} is not a multiple of 8")
    return {"qweight": _pack_rows(q.t().contiguous(), AWQ_ORDER),
            "qzeros": _pack_rows(zeros.t().contiguous(), AWQ_ORDER),
            "scales": scales.t().contiguous().to(torch.float16)}


def unpack_autoawq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, K], scales fp32 [N, K/G], zeros [N, K/G]) from AutoAWQ GEMM tensors."""
    return (_unpack_rows(qweight, AWQ_ORDER).t().contiguous(), scales.t().float().contiguous(),
            _unpack_rows(qzeros, AWQ_ORDER).t().contiguous())


def _pad8(u: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(u, (0, -u.shape[1] % 8))


def pack_compressed_tensors(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                            scale_dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """compressed-tensors pack-quantized tensors from q [N, K], scales, zeros [N, K/G] (AutoAWQ's unsigned
    values: nibbles are the same, the format reads them as value + 8)."""
    n, k = q.shape
    return {"weight_packed": _pack_rows(_pad8(q)), "weight_scale": scales.to(scale_dtype).contiguous(),
            "weight_zero_point": _pack_rows(_pad8(zeros.t().contiguous())).t().contiguous(),
            "weight_shape": torch.tensor([n, k], dtype=torch.int64)}


def unpack_compressed_tensors(weight_packed: torch.Tensor, weight_scale: torch.Tensor,
                              weight_zero_point: torch.Tensor, weight_shape: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, K], scales fp32 [N, K/G], zeros [N, K/G]) in AutoAWQ's unsigned convention."""
    n, k = (int(v) for v in weight_shape.tolist())
    q = _unpack_rows(weight_packed)[:, :k]
    zeros = _unpack_rows(weight_zero_point.t().contiguous())[:, :n].t().contiguous()
    return q.contiguous(), weight_scale.float(), zeros
