"""Checks shared by the CPU and GPU tests of transformers reading kernelkit's fp8-block checkpoints."""

import torch

from kernelkit.quant.fp8_block.format import dequantize_weight


def assert_same_dequantized_weights(theirs: torch.nn.Module, ours: torch.nn.Module) -> int:
    """Every block-FP8 layer of ``ours``, dequantized in fp32, equals the weight transformers loaded for the same
    module (``theirs``, dequantized on load) bit for bit. Returns how many modules were compared."""
    checked = 0
    for name, module in ours.named_modules():
        if hasattr(module, "weight_scale_inv"):
            mine = dequantize_weight(module.weight, module.weight_scale_inv, module.quant_method.block_size)
            assert torch.equal(theirs.get_submodule(name).weight.float(), mine), name
            checked += 1
    return checked
