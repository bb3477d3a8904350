"""The kernels kernelkit ships, for ``kernelkit info`` and ``kernelkit jit warmup``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernelkit.jit import KernelSpec
from kernelkit.ops.gemm import ops as gemm_ops
from kernelkit.ops.int8_gemm import ops as int8_ops
from kernelkit.ops.moe import ops as moe_ops
from kernelkit.ops.quant import cuda_impl, cute_impl, ops
from kernelkit.ops.w4a16 import cuda_impl as w4a16_cuda
from kernelkit.ops.w4a16 import ops as w4a16_ops


@dataclass(frozen=True)
class RegisteredOp:
    """One public op: its implementations (fastest first), its ahead-of-time specializations, and a
    small run of its Triton kernels that makes Triton compile their common variants (on a GPU)."""

    name: str
    summary: str
    impls: tuple[str, ...]
    specs: Callable[[], list[KernelSpec]]
    exercise: Callable[[torch.device], None]


def _exercise_group_quant(device: torch.device) -> None:
    from kernelkit.ops.quant import triton_impl

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = torch.randn(16, 512, dtype=dtype, device=device)
        for dst, group in ((torch.float8_e4m3fn, 128), (torch.int8, 128), (torch.int8, 512)):
            q = torch.empty(x.shape, dtype=dst, device=device)
            s = torch.empty(16, 512 // group, device=device)
            triton_impl.group_quant(x, q, s, group, 1e-10, False)


def _exercise_tensor_quant(device: torch.device) -> None:
    from kernelkit.ops.quant import triton_impl

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = torch.randn(16, 512, dtype=dtype, device=device)
        q, s = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=device), torch.empty(1, device=device)
        triton_impl.tensor_quant_fp8(x, q, s, 1e-10, True)
        triton_impl.tensor_quant_fp8(x, q, s, 1e-10, False)


def _exercise_gemm(device: torch.device) -> None:
    from kernelkit.ops.gemm import configs, triton_impl

    for m in (1, 64, 256):
        a = torch.randn(m, 512, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(256, 512, device=device).to(torch.float8_e4m3fn)
        a_s, b_s = torch.ones(m, 4, device=device), torch.ones(2, 4, device=device)
        out = torch.empty(m, 256, device=device, dtype=torch.bfloat16)
        config = configs.default_config(m, 256, 512, (128, 128))
        triton_impl.w8a8_block_fp8_matmul(a, b, a_s, b_s, (128, 128), out, config)


def _exercise_awq_gemm(device: torch.device) -> None:
    from kernelkit.ops.w4a16 import triton_impl

    for m in (1, 16, 256):
        x = torch.randn(m, 512, device=device, dtype=torch.bfloat16)
        qweight = torch.randint(-2**31, 2**31, (512, 32), dtype=torch.int32, device=device)
        qzeros = torch.randint(-2**31, 2**31, (4, 32), dtype=torch.int32, device=device)
        triton_impl.awq_gemm(x, qweight, qzeros, torch.rand(4, 256, device=device, dtype=torch.bfloat16), 128)


def _exercise_moe_align(device: torch.device) -> None:
    from kernelkit.ops.moe import triton_impl

    for tokens, experts in ((1, 128), (256, 128), (64, 8)):
        triton_impl.moe_align_block_size(torch.randint(0, experts, (tokens, 8), device=device), 64, experts)


def _no_triton(device: torch.device) -> None:
    return None


def _names(impls) -> tuple[str, ...]:
    return tuple(name for name, _, _ in impls)


REGISTERED = (
    RegisteredOp("per_token_group_quant_8bit", "per-token-group FP8/int8 activation quant (+ per_token_quant_int8)",
                 _names(ops.GROUP_IMPLS), cuda_impl.warmup_specs, _exercise_group_quant),
    RegisteredOp("per_tensor_quant_fp8", "per-tensor FP8 quant, dynamic or static scale",
                 _names(ops.TENSOR_IMPLS), cute_impl.warmup_specs, _exercise_tensor_quant),
    RegisteredOp("w8a8_block_fp8_matmul", "block-scaled FP8 GEMM (DeepSeek-V3 W8A8)",
                 _names(gemm_ops.GEMM_IMPLS), list, _exercise_gemm),
    RegisteredOp("awq_gemm", "W4A16 GEMM on AutoAWQ's GEMM layout", _names(w4a16_ops.AWQ_GEMM_IMPLS), list,
                 _exercise_awq_gemm),
    RegisteredOp("w4a16_gemm", "W4A16 GEMM on the tensor-core layout AWQ checkpoints are repacked into",
                 _names(w4a16_ops.W4A16_GEMM_IMPLS), w4a16_cuda.warmup_specs, _no_triton),
    RegisteredOp("int8_scaled_mm", "W8A8 int8 GEMM, per-token x per-channel scales (dense ModelSlim W8A8)",
                 _names(int8_ops.INT8_MM_IMPLS), list, _no_triton),
    RegisteredOp("moe_align_block_size", "MoE routing: (token, slot) pairs grouped by expert, padded to the block",
                 _names(moe_ops.ALIGN_IMPLS), list, _exercise_moe_align),
)


def find(names: list[str]) -> list[RegisteredOp]:
    """The registered ops called ``names`` (all if empty). Raises KeyError naming unknown ones."""
    if not names:
        return list(REGISTERED)
    by_name = {op.name: op for op in REGISTERED}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown kernel(s) {unknown}; registered: {sorted(by_name)}")
    return [by_name[n] for n in names]
