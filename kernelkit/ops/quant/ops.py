"""Public 8-bit activation quantizers, exposed as ``torch.library`` custom ops.

The custom ops take pre-allocated outputs and mutate them (``mutates_args``), so caller buffers
(``out_q``/``out_s``) and strided scale layouts need no copies, and the ops work under
``torch.compile(fullgraph=True)`` and inside CUDA graphs (no host syncs, no allocation inside the op).
The Python wrappers check arguments, allocate outputs and call the ops.

On CUDA tensors the implementations are tried fastest first (``benches/RESULTS.md``). Per-token-group: CUDA
C++ through tvm-ffi, the same kernel through NVRTC, Triton, the torch reference. Per-tensor: Triton, the
CuTe DSL kernel (static scales only; measured slower than Triton), the torch reference. On CPU the torch
reference runs.
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.library import kernel_op
from kernelkit.ops.quant import layouts, reference
from kernelkit.ops.quant.layouts import GROUP_SIZES

TRITON_MAX_GROUP = 16384  # one program holds a whole group in registers


def _triton():
    return triton_impl("kernelkit.ops.quant.triton_impl")


def _cuda():
    from kernelkit.ops.quant import cuda_impl

    return cuda_impl


# --- per-token-group -----------------------------------------------------------------------------------

def _group_ref(x, q, s, group_size, eps, scale_ue8m0):
    q_ref, s_ref = reference.per_token_group_quant_8bit_ref(x, group_size, q.dtype, eps, scale_ue8m0)
    q.copy_(q_ref)
    s.copy_(s_ref)


def _never(*args) -> None:
    return None


def _cuda_unsupported(x, q, s, group_size, eps, scale_ue8m0):
    return _cuda().unsupported(x, group_size)


def _triton_unsupported(x, q, s, group_size, eps, scale_ue8m0):
    return f"group {group_size} > {TRITON_MAX_GROUP}" if group_size > TRITON_MAX_GROUP else None


GROUP_IMPLS = (
    ("cuda-tvm_ffi", _cuda_unsupported, lambda *a: _cuda().group_quant_tvm_ffi(*a)),
    ("cuda-nvrtc", _cuda_unsupported, lambda *a: _cuda().group_quant_nvrtc(*a)),
    ("triton", _triton_unsupported, lambda *a: _triton().group_quant(*a)),
    ("torch", _never, _group_ref),
)


@kernel_op("per_token_group_quant_8bit_", mutates_args=("q", "s"))
def _group_quant_op(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group_size: int, eps: float,
                    scale_ue8m0: bool) -> None:
    """x [M, H] -> q [M, H] (contiguous), s [M, H/group_size] (any non-overlapping strides). CPU: reference."""
    _group_ref(x, q, s, group_size, eps, scale_ue8m0)


@_group_quant_op.register_kernel("cuda")
def _group_quant_cuda(x, q, s, group_size, eps, scale_ue8m0):
    run_first("per_token_group_quant_8bit", GROUP_IMPLS, x, q, s, group_size, eps, scale_ue8m0)


@_group_quant_op.register_fake
def _group_quant_fake(x, q, s, group_size, eps, scale_ue8m0):
    return None


def per_token_group_quant_8bit(
    x: torch.Tensor,
    group_size: int,
    dst_dtype: torch.dtype = torch.float8_e4m3fn,
    eps: float = 1e-10,
    column_major_scales: bool = False,
    scale_tma_aligned: bool = False,
    scale_ue8m0: bool = False,
    out_q: torch.Tensor | None = None,
    out_s: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize activations to 8 bits with one fp32 scale per token and group of ``group_size`` columns.

    Semantics are those of ``reference.per_token_group_quant_8bit_ref``: scale = max(amax, eps) / qmax
    (448 for FP8 e4m3, 127 for int8), q = cast(x / scale) with round-to-nearest-even and saturation.
    Format and API: DeepSeek-V3 fine-grained FP8 (arXiv 2412.19437); sglang ``per_token_group_quant_8bit``
    (python/sglang/srt/layers/quantization/fp8_kernel.py), DeepGEMM scale layouts.

    Args:
        x: [..., H] bfloat16, float16 or float32; H divisible by ``group_size``.
        group_size: 16, 32, 64, 128 or 256 columns per scale.
        dst_dtype: torch.float8_e4m3fn or torch.int8.
        eps: lower clamp of each group's amax (>= 1e-30).
        column_major_scales: return scales as an [M, G] view of a [G, M] buffer (x must be 2-D).
        scale_tma_aligned: pad M of column-major scales to a multiple of 4 (16 bytes), as TMA loads need.
        scale_ue8m0: round scales up to powers of two; needs column-major TMA-aligned scales.
        out_q: optional contiguous ``dst_dtype`` buffer of x's shape.
        out_s: optional fp32 buffer of the scales' shape and layout.

    Returns:
        (q, scales): q [..., H] ``dst_dtype``; scales fp32 [..., H / group_size] (row-major) or [M, G]
        (column-major).

    Raises:
        TypeError: x is not a bf16/fp16/fp32 tensor.
        ValueError: bad group_size, H not divisible by it, bad eps or dst_dtype, an inconsistent flag
            combination, or an ``out_q``/``out_s`` of the wrong shape, dtype, device or strides.
    """
    what = "per_token_group_quant_8bit"
    layouts.check_input(x, what)
    layouts.check_eps(eps, what)
    reference.qmax(dst_dtype)
    if group_size not in GROUP_SIZES:
        raise ValueError(f"{what}: group_size must be one of {GROUP_SIZES}, got {group_size}")
    h = x.shape[-1]
    if h % group_size:
        raise ValueError(f"{what}: last dimension {h} is not divisible by group_size {group_size}")
    if scale_tma_aligned and not column_major_scales:
        raise ValueError(f"{what}: scale_tma_aligned needs column_major_scales=True")
    if scale_ue8m0 and not (column_major_scales and scale_tma_aligned):
        raise ValueError(f"{what}: scale_ue8m0 needs column_major_scales=True and scale_tma_aligned=True "
                         "(the layout DeepGEMM reads UE8M0 scales in)")
    if column_major_scales and x.dim() != 2:
        raise ValueError(f"{what}: column-major scales need a 2-D x, got shape {tuple(x.shape)}")
    lead, groups = tuple(x.shape[:-1]), h // group_size
    m = x.numel() // h
    if out_q is not None:
        layouts.check_out_q(out_q, x, dst_dtype, what)
    q = out_q if out_q is not None else torch.empty(x.shape, dtype=dst_dtype, device=x.device)
    if out_s is None:
        s = layouts.alloc_scales(lead, m, groups, column_major_scales, scale_tma_aligned, x.device)
        s2 = s.view(m, groups) if not column_major_scales else s
    else:
        s = out_s
        s2 = layouts.scales_2d(out_s, lead, m, groups, column_major_scales, scale_tma_aligned, x.device, what)
    torch.ops.kernelkit.per_token_group_quant_8bit_(layouts.as_rows(x), q.view(m, h), s2, group_size, eps,
                                                     scale_ue8m0)
    return q, s


def per_token_group_quant_fp8(x: torch.Tensor, group_size: int, eps: float = 1e-10,
                              column_major_scales: bool = False, scale_tma_aligned: bool = False,
                              scale_ue8m0: bool = False, out_q: torch.Tensor | None = None,
                              out_s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 (float8_e4m3fn) shorthand of :func:`per_token_group_quant_8bit`, vLLM's name for it.

    Same arguments (without ``dst_dtype``), shapes, semantics and errors.
    """
    return per_token_group_quant_8bit(x, group_size, torch.float8_e4m3fn, eps, column_major_scales,
                                      scale_tma_aligned, scale_ue8m0, out_q, out_s)


def per_token_quant_int8(x: torch.Tensor, eps: float = 1e-10, out_q: torch.Tensor | None = None,
                         out_s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one fp32 scale per token (row): scale = max(amax, eps) / 127.

    Source: sglang ``per_token_quant_int8`` (python/sglang/srt/layers/quantization/int8_kernel.py), the
    activation side of W8A8 int8 GEMMs (SmoothQuant, arXiv 2211.10438).

    Args:
        x: [..., H] bfloat16, float16 or float32.
        eps: lower clamp of each row's amax (>= 1e-30).
        out_q: optional contiguous int8 buffer of x's shape; out_s: optional fp32 [..., 1] buffer.

    Returns:
        (q, scales): q [..., H] int8, scales [..., 1] fp32.

    Raises:
        TypeError, ValueError: as :func:`per_token_group_quant_8bit`.
    """
    what = "per_token_quant_int8"
    layouts.check_input(x, what)
    layouts.check_eps(eps, what)
    h, m, lead = x.shape[-1], x.numel() // x.shape[-1], tuple(x.shape[:-1])
    if out_q is not None:
        layouts.check_out_q(out_q, x, torch.int8, what)
    q = out_q if out_q is not None else torch.empty(x.shape, dtype=torch.int8, device=x.device)
    if out_s is None:
        s = torch.empty(*lead, 1, dtype=torch.float32, device=x.device)
        s2 = s.view(m, 1)
    else:
        s = out_s
        s2 = layouts.scales_2d(out_s, lead, m, 1, False, False, x.device, what)
    torch.ops.kernelkit.per_token_group_quant_8bit_(layouts.as_rows(x), q.view(m, h), s2, h, eps, False)
    return q, s


# --- per-tensor FP8 ------------------------------------------------------------------------------------

def _tensor_ref(x, q, scale, eps, dynamic):
    q_ref, s_ref = reference.per_tensor_quant_fp8_ref(x, None if dynamic else scale, eps)
    q.copy_(q_ref)
    scale.copy_(s_ref)


def _cute_unsupported(x, q, scale, eps, dynamic):
    from kernelkit.ops.quant import cute_impl

    return cute_impl.unsupported(x, dynamic)


def _cute_run(x, q, scale, eps, dynamic):
    from kernelkit.ops.quant import cute_impl

    cute_impl.tensor_quant_fp8_static(x, q, scale)


TENSOR_IMPLS = (
    ("triton", _never, lambda *a: _triton().tensor_quant_fp8(*a)),
    ("cute", _cute_unsupported, _cute_run),
    ("torch", _never, _tensor_ref),
)


@kernel_op("per_tensor_quant_fp8_", mutates_args=("q", "scale"))
def _tensor_quant_op(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, eps: float, dynamic: bool) -> None:
    """x (contiguous) -> q float8_e4m3fn; scale fp32 [1] written if dynamic, else read. CPU: reference."""
    _tensor_ref(x, q, scale, eps, dynamic)


@_tensor_quant_op.register_kernel("cuda")
def _tensor_quant_cuda(x, q, scale, eps, dynamic):
    run_first("per_tensor_quant_fp8", TENSOR_IMPLS, x, q, scale, eps, dynamic)


@_tensor_quant_op.register_fake
def _tensor_quant_fake(x, q, scale, eps, dynamic):
    return None


def per_tensor_quant_fp8(x: torch.Tensor, scale: torch.Tensor | None = None, eps: float = 1e-10,
                         out_q: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a whole tensor to float8_e4m3fn with one fp32 scale.

    Dynamic (``scale=None``): scale = max(amax(|x|), eps) / 448. Static: the given scale is used.
    q = cast(x / scale), round-to-nearest-even, saturating to +-448. Source: vLLM ``scaled_fp8_quant``
    (vllm/_custom_ops.py), the per-tensor FP8 W8A8 recipe (FP8 formats, arXiv 2209.05433).

    Args:
        x: any shape, bfloat16, float16 or float32.
        scale: optional fp32 tensor with one element, on x's device.
        eps: lower clamp of amax (>= 1e-30), dynamic mode only.
        out_q: optional contiguous float8_e4m3fn buffer of x's shape.

    Returns:
        (q, scale): q float8_e4m3fn of x's shape; scale fp32 [1].

    Raises:
        TypeError: x is not a bf16/fp16/fp32 tensor.
        ValueError: bad eps, a scale that is not one fp32 element on x's device, or a bad ``out_q``.
    """
    what = "per_tensor_quant_fp8"
    layouts.check_input(x, what)
    layouts.check_eps(eps, what)
    if out_q is not None:
        layouts.check_out_q(out_q, x, torch.float8_e4m3fn, what)
    q = out_q if out_q is not None else torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    if scale is None:
        s = torch.empty(1, dtype=torch.float32, device=x.device)
    else:
        if scale.numel() != 1 or scale.dtype != torch.float32 or scale.device != x.device:
            raise ValueError(f"{what}: scale must be one float32 element on {x.device}; "
                             f"got {scale.dtype} {tuple(scale.shape)} on {scale.device}")
        s = scale.reshape(1)
    torch.ops.kernelkit.per_tensor_quant_fp8_(x.contiguous(), q, s, eps, scale is None)
    return q, s
