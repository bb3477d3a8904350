"""The MoE routing ops as ``torch.library`` ops (fake implementations included).

``moe_align_block_size``: the (token, slot) pairs grouped by expert and padded to the GEMM's block size (vLLM's
and sglang's op of that name and outputs). CUDA runs the Triton kernels (``triton_impl.py``: no host
synchronisation, so CUDA graphs can capture it); the CPU runs the plain-torch reference, which defines it.
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
