"""kernelkit's kernels as PyTorch ops (``torch.ops.kernelkit.*``) with plain-Python wrappers.

Import what you need into your own model code::

    from kernelkit.ops import per_token_group_quant_fp8
    q, scales = per_token_group_quant_fp8(x, group_size=128)
"""

from kernelkit.ops.gemm.ops import w8a8_block_fp8_matmul
from kernelkit.ops.quant.ops import (
    per_tensor_quant_fp8,
    per_token_group_quant_8bit,
    per_token_group_quant_fp8,
    per_token_quant_int8,
)

__all__ = [
    "per_tensor_quant_fp8",
    "per_token_group_quant_8bit",
    "per_token_group_quant_fp8",
    "per_token_quant_int8",
    "w8a8_block_fp8_matmul",
]
