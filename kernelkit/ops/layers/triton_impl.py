"""Triton kernels of the fused layer ops (semantics: ``reference.py``). One program per token row.

Arithmetic runs in fp32 and is rounded to the storage dtype after each step where torch's eager ops round
(e.g. bf16 * bf16 is exact in fp32 and rounds once, as torch's bf16 multiply does), so results match the
references bit for bit. Casts to bf16 go through ``_cast``, which rounds to nearest-even with integer ops
first: Triton 3.6's interpreter truncates fp32 -> bf16 (and mis-computes arithmetic done directly on bf16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernelkit.ops.pdl import launch_kwargs, pdl_start


@triton.jit
def _cast(x, dtype: tl.constexpr):
    """fp32 -> dtype, round-to-nearest-even (bf16 pre-rounded onto its grid, so the cast itself is exact). NaN
    stays NaN: the GPU's canonical NaN 0x7FFFFFFF would round to -0.0 through the integer carry."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536  # -65536 == 0xFFFF0000
        x = tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    return x.to(dtype)


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n, eps, HAS_RES: tl.constexpr,
                     BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    pdl_start(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0)
    dtype = x.dtype
    if HAS_RES:  # x + residual, rounded to x's dtype as the reference's add
        x = _cast(x.to(tl.float32) + tl.load(res_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32), dtype)
        tl.store(res_out_ptr + row * n + cols, x, mask=mask)
    xf = x.to(tl.float32)
    normed = _cast(xf * tl.math.rsqrt(tl.sum(xf * xf, axis=0) / n + eps), dtype)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * n + cols, _cast(w.to(tl.float32) * normed.to(tl.float32), dtype), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None,
             out: torch.Tensor, residual_out: torch.Tensor | None) -> None:
    """x, residual [T, n] contiguous -> out [T, n] (and residual_out = x + residual)."""
    if x.shape[0] == 0:
        return
    n = x.shape[-1]
    block = triton.next_power_of_2(n)
    # one row per program: at decode batch sizes the launch is a handful of programs, so spread a row over up to
    # 16 warps (8 elements a thread at n = 4096) to shorten each program
    _rms_norm_kernel[(x.shape[0],)](x, residual if residual is not None else x, weight, out,
                                    residual_out if residual_out is not None else out, n, eps,
                                    HAS_RES=residual is not None, BLOCK=block, num_warps=min(16, max(4, block // 256)),
                                    **launch_kwargs(x.device))


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, d, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    pdl_start(USE_PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * 2 * d + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * 2 * d + d + cols, mask=mask, other=0.0)
    gf = gate.to(tl.float32)
    silu = _cast(gf / (1 + tl.exp(-gf)), gate.dtype)  # F.silu rounds to the input dtype before the product
    tl.store(out_ptr + row * d + cols, _cast(silu.to(tl.float32) * up.to(tl.float32), gate.dtype), mask=mask)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor) -> None:
    """x [T, 2d] contiguous -> out [T, d]."""
    if x.shape[0] == 0:
        return
    d = x.shape[-1] // 2
    block = min(1024, triton.next_power_of_2(d))
    _silu_and_mul_kernel[(x.shape[0], triton.cdiv(d, block))](x, out, d, BLOCK=block, **launch_kwargs(x.device))


@triton.jit
def _rotary_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, heads, stride_t, stride_h, HALF: tl.constexpr,
                   USE_PDL: tl.constexpr):
    pdl_start(USE_PDL)
    row, head = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = tl.arange(0, HALF)
    base = row * stride_t + head * stride_h
    x1 = tl.load(x_ptr + base + cols)
    x2 = tl.load(x_ptr + base + HALF + cols)
    c1 = tl.load(cos_ptr + row * 2 * HALF + cols)
    c2 = tl.load(cos_ptr + row * 2 * HALF + HALF + cols)
    s1 = tl.load(sin_ptr + row * 2 * HALF + cols)
    s2 = tl.load(sin_ptr + row * 2 * HALF + HALF + cols)
    out = out_ptr + row * heads * 2 * HALF + head * 2 * HALF
    dtype = x1.dtype
    x1, x2 = x1.to(tl.float32), x2.to(tl.float32)
    # x * cos + rotate_half(x) * sin, each product rounded as torch's elementwise ops round it
    a1, a2 = _cast(x1 * c1.to(tl.float32), dtype), _cast(x2 * c2.to(tl.float32), dtype)
    b1, b2 = _cast(x2 * s1.to(tl.float32), dtype), _cast(x1 * s2.to(tl.float32), dtype)
    tl.store(out + cols, _cast(a1.to(tl.float32) - b1.to(tl.float32), dtype))
    tl.store(out + HALF + cols, _cast(a2.to(tl.float32) + b2.to(tl.float32), dtype))


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> None:
    """x [T, heads, D] (any row/head strides, unit last stride), cos/sin [T, D] contiguous -> out contiguous."""
    if x.shape[0] == 0:
        return
    _rotary_kernel[(x.shape[0], x.shape[1])](x, cos, sin, out, x.shape[1], x.stride(0), x.stride(1),
                                             HALF=x.shape[-1] // 2, **launch_kwargs(x.device))
