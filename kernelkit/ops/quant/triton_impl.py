"""Triton implementations of the 8-bit activation quantizers (semantics: ``reference.py``).

Bit-exactness notes (the GPU path is tested bit-for-bit against torch's cast):
- amax is an integer max over ``bits(x) & 0x7fffffff``: NaN sorts above +inf, so it propagates, whereas
  ``tl.max`` on floats may drop it.
- the reciprocal of the scale uses ``tl.math.div_rn`` (IEEE round-to-nearest), not Triton's approximate
  ``/``; values are then multiplied by it, as the reference defines.
- FP8 values are produced without Triton's fp32 -> float8e4nv cast: we round onto the e4m3 grid with the
  add-and-subtract trick and assemble the bit pattern with integer ops, stored through a uint8 view.
  Triton 3.6's interpreter cast drops the carry into the exponent (126.99 -> 64; upstream triton PR
  #11897) and turns NaN into 256, so this is what makes the interpreter agree with the GPU and torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.quant.reference import qmax

# 1.5 * 2**23: adding and subtracting (quantum * this) rounds an fp32 to a multiple of quantum, ties to even.
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _e4m3_bits(y):
    """float8_e4m3fn bit pattern of fp32 y in [-448, 448] or NaN, rounded to nearest, ties to even.

    The magnitude is rounded onto the e4m3 grid by adding and subtracting quantum * 1.5 * 2**23 (3
    mantissa bits; subnormals share exponent -6), then re-encoded with integer ops; the sign is copied
    from y's bits, so -0.0 stays negative as in torch's cast.
    """
    bits = y.to(tl.int32, bitcast=True)
    a = tl.abs(y)
    exponent = tl.minimum(tl.maximum(((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6), 8)
    magic = ((exponent - 3 + 127) << 23).to(tl.float32, bitcast=True) * _RNE_MAGIC
    r = ((a + magic) - magic).to(tl.int32, bitcast=True)
    r_exponent = r >> 23
    normal = ((r_exponent - 120) << 3) | ((r >> 20) & 0x7)  # rebias 127 -> 7
    subnormal = (r.to(tl.float32, bitcast=True) * 512.0).to(tl.int32)  # multiples of 2**-9
    out = tl.where(r_exponent >= 121, normal, subnormal)  # 2**-6 is the smallest normal
    out = tl.where(a != a, 0x7F, out)
    return (out | ((bits >> 24) & 0x80)).to(tl.uint8)


@triton.jit
def _store_8bit(ptr, y, mask, QMAX: tl.constexpr, IS_FP8: tl.constexpr):
    """Saturate scaled fp32 values and store them as e4m3 bit patterns (uint8) or int8 (NaN -> 0)."""
    y = tl.where(y > QMAX, QMAX, tl.where(y < -QMAX, -QMAX, y))  # comparisons leave NaN alone
    if IS_FP8:
        tl.store(ptr, _e4m3_bits(y), mask=mask)
    else:
        y = (y + _RNE_MAGIC) - _RNE_MAGIC
        tl.store(ptr, tl.where(y != y, 0.0, y).to(tl.int8), mask=mask)


@triton.jit
def _amax_to_scale(amax_bits, eps, QMAX: tl.constexpr, UE8M0: tl.constexpr):
    amax = amax_bits.to(tl.float32, bitcast=True)
    amax = tl.where(amax < eps, eps, amax)
    scale = tl.math.div_rn(amax, QMAX)
    if UE8M0:
        b = scale.to(tl.int32, bitcast=True)
        round_up = ((b & 0x7F800000) != 0x7F800000) & ((b & 0x7FFFFF) != 0)
        scale = tl.where(round_up, ((b & 0x7F800000) + 0x800000).to(tl.float32, bitcast=True), scale)
    return scale


@triton.jit
def _group_quant_kernel(
    x_ptr, q_ptr, s_ptr, num_groups, groups_per_row, x_row_stride, s_stride_m, s_stride_g, eps,
    GROUP: tl.constexpr, BLOCK: tl.constexpr, GROUPS_PER_PROG: tl.constexpr,
    QMAX: tl.constexpr, IS_FP8: tl.constexpr, UE8M0: tl.constexpr,
):
    gid = tl.program_id(0).to(tl.int64) * GROUPS_PER_PROG + tl.arange(0, GROUPS_PER_PROG)
    gmask = gid < num_groups
    row = gid // groups_per_row
    g = gid % groups_per_row
    cols = tl.arange(0, BLOCK)
    mask = gmask[:, None] & (cols < GROUP)[None, :]
    x = tl.load(x_ptr + (row * x_row_stride + g * GROUP)[:, None] + cols[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    amax_bits = tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1)
    scale = _amax_to_scale(amax_bits, eps, QMAX, UE8M0)
    tl.store(s_ptr + row * s_stride_m + g * s_stride_g, scale, mask=gmask)
    y = x * tl.math.div_rn(1.0, scale)[:, None]
    _store_8bit(q_ptr + (gid * GROUP)[:, None] + cols[None, :], y, mask, QMAX, IS_FP8)


def _as_bits(q: torch.Tensor) -> torch.Tensor:
    """FP8 outputs are written as their uint8 bit patterns."""
    return q.view(torch.uint8) if q.dtype == torch.float8_e4m3fn else q


def _group_launch_config(group_size: int) -> tuple[int, int, int]:
    """(BLOCK, GROUPS_PER_PROG, num_warps): about 4K elements a program."""
    block = triton.next_power_of_2(group_size)
    groups_per_prog = max(1, 4096 // block)
    num_warps = 4 if block * groups_per_prog <= 4096 else min(16, block // 1024)
    return block, groups_per_prog, num_warps


def group_quant(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group_size: int, eps: float,
                scale_ue8m0: bool) -> None:
    """Quantize x [M, H] (last dim contiguous) into q [M, H] (contiguous) and s [M, H/group] (strided)."""
    m, h = x.shape
    num_groups = m * (h // group_size)
    if num_groups == 0:
        return
    block, gpp, num_warps = _group_launch_config(group_size)
    grid = (triton.cdiv(num_groups, gpp),)
    _group_quant_kernel[grid](
        x, _as_bits(q), s, num_groups, h // group_size, x.stride(0), s.stride(0), s.stride(1), eps,
        GROUP=group_size, BLOCK=block, GROUPS_PER_PROG=gpp, QMAX=qmax(q.dtype),
        IS_FP8=q.dtype == torch.float8_e4m3fn, UE8M0=scale_ue8m0, num_warps=num_warps,
    )


@triton.jit
def _amax_kernel(x_ptr, amax_bits_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.atomic_max(amax_bits_ptr, tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=0))


@triton.jit
def _tensor_quant_kernel(x_ptr, q_ptr, scale_ptr, amax_bits_ptr, n, eps, DYNAMIC: tl.constexpr,
                         BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if DYNAMIC:
        scale = _amax_to_scale(tl.load(amax_bits_ptr), eps, 448.0, False)
        if pid == 0:
            tl.store(scale_ptr, scale)
    else:
        scale = tl.load(scale_ptr)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _store_8bit(q_ptr + offs, x * tl.math.div_rn(1.0, scale), mask, 448.0, True)


_TENSOR_BLOCK = 4096


def tensor_quant_fp8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, eps: float, dynamic: bool) -> None:
    """Per-tensor FP8: x contiguous (any shape) -> q; scale fp32 [1] is written if dynamic, else read."""
    n = x.numel()
    if dynamic:
        amax_bits = torch.zeros(1, dtype=torch.int32, device=x.device)
        if n:
            _amax_kernel[(triton.cdiv(n, _TENSOR_BLOCK),)](x, amax_bits, n, BLOCK=_TENSOR_BLOCK, num_warps=8)
    else:
        amax_bits = scale  # unused by the kernel when static
    grid = (max(1, triton.cdiv(n, _TENSOR_BLOCK)),)
    _tensor_quant_kernel[grid](x, _as_bits(q), scale, amax_bits, n, eps, DYNAMIC=dynamic, BLOCK=_TENSOR_BLOCK,
                               num_warps=8)

