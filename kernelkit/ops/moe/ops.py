"""The MoE ops as ``torch.library`` ops (fake implementations included).

``moe_align_block_size``: the (token, slot) pairs grouped by expert and padded to the GEMM's block size (vLLM's
and sglang's op of that name and outputs). CUDA runs the Triton kernels (``triton_impl.py``: no host
synchronisation, so CUDA graphs can capture it); the CPU runs the plain-torch reference, which defines it.

``fused_experts``: the experts of a MoE layer given its routing (vLLM's and sglang's ``fused_experts``): CUDA runs
the Triton grouped GEMMs (``fused_moe_triton.py``: capturable), the CPU the reference.
"""

from __future__ import annotations

import torch

from kernelkit.ops.dispatch import run_first, triton_impl
from kernelkit.ops.library import kernel_op
from kernelkit.ops.moe import reference


@kernel_op("moe_align_block_size")
def _align_op(topk_ids: torch.Tensor, block_size: int, num_experts: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.moe_align_block_size_ref(topk_ids, block_size, num_experts)


def _never(*args) -> None:
    return None


def _triton(topk_ids, block_size, num_experts):
    return triton_impl("kernelkit.ops.moe.triton_impl").moe_align_block_size(topk_ids, block_size, num_experts)


ALIGN_IMPLS = (("triton", _never, _triton), ("torch", _never, reference.moe_align_block_size_ref))


@_align_op.register_kernel("cuda")
def _align_cuda(topk_ids, block_size, num_experts):
    return run_first("moe_align_block_size", ALIGN_IMPLS, topk_ids, block_size, num_experts)


@_align_op.register_fake
def _align_fake(topk_ids, block_size, num_experts):
    length = reference.aligned_length(topk_ids.numel(), block_size, num_experts)
    new = topk_ids.new_empty
    return (new(length, dtype=torch.int32), new(-(-length // block_size), dtype=torch.int32),
            new(1, dtype=torch.int32))


def moe_align_block_size(topk_ids: torch.Tensor, block_size: int, num_experts: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group the (token, slot) pairs of ``topk_ids`` by expert, each group padded to a multiple of
    ``block_size`` rows, for a grouped GEMM whose every M block reads one expert's weights.

    Args:
        topk_ids: int32 or int64 [T, k], experts in 0..E-1 (T = 0 allowed).
        block_size: the GEMM's M tile, >= 1.
        num_experts: E, >= 1.

    Returns:
        sorted_token_ids: int32 [T*k + E*(block_size - 1)] (T*k * block_size when T*k < E): flat indices into
            ``topk_ids`` grouped by expert, ascending within an expert; padding and the tail hold T*k.
        expert_ids: int32 [ceil(len(sorted_token_ids) / block_size)]: each block's expert, -1 past the last.
        num_tokens_post_padded: int32 [1]: the padded groups' total length.

    Raises:
        ValueError: a non-integer ``topk_ids``, or a block size or expert count below 1.
    """
    if topk_ids.dtype not in (torch.int32, torch.int64) or topk_ids.dim() != 2:
        raise ValueError(f"moe_align_block_size: topk_ids must be int32 or int64 [T, k], got {topk_ids.dtype} "
                         f"{tuple(topk_ids.shape)}")
    if block_size < 1 or num_experts < 1:
        raise ValueError(f"moe_align_block_size: block_size and num_experts must be >= 1, got {block_size} and "
                         f"{num_experts}")
    return torch.ops.kernelkit.moe_align_block_size(topk_ids, int(block_size), int(num_experts))


@kernel_op("fused_experts")
def _experts_op(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor, w13_scale: torch.Tensor | None, w2_scale: torch.Tensor | None,
                int4: bool) -> torch.Tensor:
    return reference.fused_experts_ref(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, int4)


def _triton_experts(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, int4):
    fused = triton_impl("kernelkit.ops.moe.fused_moe_triton")
    return fused.fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, int4)


EXPERTS_IMPLS = (("triton", _never, _triton_experts), ("torch", _never, reference.fused_experts_ref))


@_experts_op.register_kernel("cuda")
def _experts_cuda(*args):
    return run_first("fused_experts", EXPERTS_IMPLS, *args)


@_experts_op.register_fake
def _experts_fake(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, int4):
    return torch.empty_like(x)


def fused_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, w13_scale: torch.Tensor | None = None,
                  w2_scale: torch.Tensor | None = None, int4: bool = False) -> torch.Tensor:
    """out[t] = sum_j topk_weights[t, j] * w2[e] @ (silu(gate_e x[t]) * up_e x[t]), e = topk_ids[t, j]
    (SwiGLU experts stacked as vLLM stacks them; ``reference.py`` defines it for each weight type).

    Args:
        x: [T, H] bf16/fp16/fp32 (T = 0 allowed); topk_weights: fp32 [T, k]; topk_ids: int32/int64 [T, k] in
            0..E-1.
        w13: [E, 2I, H] (gate rows, then up rows) and w2: [E, H, I] in x's dtype; or int8 W8A8 with
            ``w13_scale`` fp32 [E, 2I] and ``w2_scale`` fp32 [E, H] (per output channel; activations are
            quantized per token at run time); or, with ``int4``, int8 [E, I, H] and [E, H/2, I] holding two int4
            values each along the output rows (low nibble: the even row; msModelSlim's W4A8_DYNAMIC packing).

    Returns: [T, H] in x's dtype.

    Raises:
        ValueError: shapes or dtypes that do not fit one another, or scales missing for int8 weights.
    """
    if x.dim() != 2 or topk_ids.dim() != 2 or topk_weights.shape != topk_ids.shape or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"fused_experts: x must be [T, H] and topk_weights/topk_ids [T, k], got "
                         f"{tuple(x.shape)}, {tuple(topk_weights.shape)}, {tuple(topk_ids.shape)}")
    quantized = w13.dtype == torch.int8
    if quantized != (w13_scale is not None and w2_scale is not None) or (int4 and not quantized):
        raise ValueError("fused_experts: int8 (and int4) expert weights need w13_scale and w2_scale; float ones "
                         f"take none (got {w13.dtype} weights, scales given: {w13_scale is not None})")
    rows = w13.shape[1] * (2 if int4 else 1)
    if rows % 2 or w13.shape[2] != x.shape[1] or w2.shape[2] != rows // 2 or (not quantized and w13.dtype != x.dtype):
        raise ValueError(f"fused_experts: w13 {tuple(w13.shape)} {w13.dtype} and w2 {tuple(w2.shape)} do not fit x "
                         f"{tuple(x.shape)} {x.dtype}" + (" (int4: w13 is [E, I, H] packed)" if int4 else ""))
    if quantized:
        w13_scale, w2_scale = w13_scale.reshape(w13.shape[0], -1).float(), w2_scale.reshape(w2.shape[0], -1).float()
    return torch.ops.kernelkit.fused_experts(x, w13, w2, topk_weights.float(), topk_ids, w13_scale, w2_scale,
                                             bool(int4))
