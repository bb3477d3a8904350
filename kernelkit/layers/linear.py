"""Linear layers declared up front (vLLM/nano-vllm names), each computing through its ``LinearMethod``.

``MergedColumnParallelLinear`` (gate_up) and ``QKVParallelLinear`` stack the outputs of several checkpoint
modules in one layer, so one ``apply`` (one GEMM, where the method's format allows) computes them all; the
loader places each part's tensors with ``shard_id`` = the part's position. ``tp_rank``/``tp_size`` are taken
now so that tensor parallelism will not change the layers' signatures; only ``tp_size`` 1 is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernelkit.layers.base import LinearMethod, QuantContext, partitioned_loader, set_weight_attrs


@dataclass(frozen=True)
class UnquantizedLinearMethod(LinearMethod):
    """``weight`` [sum(N parts), K] in the activation dtype; y = x @ weight.T + bias."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        weight = nn.Parameter(torch.empty(sum(output_partition_sizes), input_size, dtype=params_dtype),
                              requires_grad=False)
        layer.register_parameter("weight", set_weight_attrs(
            weight, weight_loader=partitioned_loader(output_partition_sizes)))

    def apply(self, layer, x, bias=None):
        return F.linear(x, layer.weight, bias)


def _check_tp(tp_rank: int, tp_size: int) -> None:
    if tp_size != 1 or tp_rank != 0:
        raise NotImplementedError(f"tensor parallelism is not implemented yet (tp_size={tp_size})")


class LinearBase(nn.Module):
    """A linear layer whose parts' outputs are stacked: ``output_partition_sizes`` [N_0, N_1, ...].

    Args:
        input_size: K.
        output_sizes: N of each part (one entry unless merged).
        bias: whether the layer has a bias [sum(N)] (in ``params_dtype``).
        quant: picks the method by ``prefix`` (None: unquantized).
        prefix: the layer's module name in the model (e.g. ``model.layers.0.self_attn.qkv_proj``).
        params_dtype: activation dtype, and that of unquantized parameters.
    Raises:
        NotImplementedError: ``tp_size`` > 1. ValueError: the parts of a merged layer disagree on a method.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False,
                 quant: QuantContext | None = None, prefix: str = "", params_dtype: torch.dtype | None = None,
                 tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        _check_tp(tp_rank, tp_size)
        quant = quant or QuantContext()
        params_dtype = params_dtype or torch.get_default_dtype()
        self.input_size, self.output_partition_sizes, self.params_dtype = input_size, list(output_sizes), params_dtype
        self.output_size, self.prefix, self.tp_rank, self.tp_size = sum(output_sizes), prefix, tp_rank, tp_size
        self.checkpoint_prefixes = quant.checkpoint_prefixes(prefix)  # one per part
        self.quant_method: LinearMethod = quant.linear_method(prefix) or UnquantizedLinearMethod()
        self.quant_method.create_weights(self, input_size, self.output_partition_sizes, params_dtype)
        if bias:
            self.bias = set_weight_attrs(nn.Parameter(torch.empty(self.output_size, dtype=params_dtype),
                                                      requires_grad=False),
                                         weight_loader=partitioned_loader(self.output_partition_sizes))
        else:
            self.bias = None

    @property
    def in_features(self) -> int:
        return self.input_size

    @property
    def out_features(self) -> int:
        return self.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x, self.bias)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, output_partition_sizes={self.output_partition_sizes}, "
                f"bias={self.bias is not None}, quant_method={self.quant_method}")


class ReplicatedLinear(LinearBase):
    """One checkpoint module, not split over ranks (also what ``quantize_`` puts in place of an nn.Linear)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, **kwargs):
        super().__init__(input_size, [output_size], bias, **kwargs)


class ColumnParallelLinear(LinearBase):
    """Outputs split over ranks (at tp_size 1: the whole layer)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, **kwargs):
        super().__init__(input_size, [output_size], bias, **kwargs)


class RowParallelLinear(LinearBase):
    """Inputs split over ranks, outputs all-reduced (at tp_size 1: the whole layer)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, **kwargs):
        super().__init__(input_size, [output_size], bias, **kwargs)


class MergedColumnParallelLinear(LinearBase):
    """Several column-parallel modules of one input in one layer (gate_proj and up_proj: ``gate_up_proj``)."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False, **kwargs):
        super().__init__(input_size, output_sizes, bias, **kwargs)


class QKVParallelLinear(LinearBase):
    """q_proj, k_proj and v_proj in one layer (``qkv_proj``): outputs [q heads | k heads | v heads]."""

    def __init__(self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool = False, **kwargs):
        self.head_size, self.num_heads, self.num_kv_heads = head_size, total_num_heads, total_num_kv_heads
        q, kv = total_num_heads * head_size, total_num_kv_heads * head_size
        super().__init__(hidden_size, [q, kv, kv], bias, **kwargs)
