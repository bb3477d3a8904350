"""Linear layers declared up front (vLLM/nano-vllm names), each computing through its ``LinearMethod``.

``MergedColumnParallelLinear`` (gate_up) and ``QKVParallelLinear`` stack the outputs of several checkpoint
modules in one layer, so one ``apply`` (one GEMM, where the method's format allows) computes them all; the
loader places each part's tensors with ``shard_id`` = the part's position.

Tensor parallelism (Megatron-LM's split, vLLM's classes): with ``tp_size`` > 1 a column-parallel layer holds
this rank's share of every part's output rows and returns its share of the outputs; a row-parallel layer holds
its share of the input columns, takes its share of the inputs and sums the partial outputs over the ranks
(``kernelkit.distributed.all_reduce``) before adding the bias. Each checkpoint tensor is narrowed to the rank's
share on the way in (``sharding.py``), as the method's parameters declare their layout; a layout that a split
would cut (a 128 x 128 scale block) is refused when the layer is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernelkit import distributed
from kernelkit.layers.base import (
    LinearMethod,
    QuantContext,
    default_weight_loader,
    partitioned_loader,
    set_weight_attrs,
)
from kernelkit.layers.sharding import Shard, check_shardable, check_tp, shard_tensor


@dataclass(frozen=True)
class UnquantizedLinearMethod(LinearMethod):
    """``weight`` [sum(N parts), K] in the activation dtype; y = x @ weight.T + bias."""

    def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
        weight = nn.Parameter(torch.empty(sum(output_partition_sizes), input_size, dtype=params_dtype),
                              requires_grad=False)
        layer.register_parameter("weight", set_weight_attrs(
            weight, weight_loader=partitioned_loader(output_partition_sizes), output_dim=0, input_dim=1))

    def apply(self, layer, x, bias=None):
        return F.linear(x, layer.weight, bias)


class LinearBase(nn.Module):
    """A linear layer whose parts' outputs are stacked: ``output_partition_sizes`` [N_0, N_1, ...].

    Args:
        input_size: K.
        output_sizes: N of each part (one entry unless merged).
        bias: whether the layer has a bias [sum(N)] (in ``params_dtype``).
        quant: picks the method by ``prefix`` (None: unquantized).
        prefix: the layer's module name in the model (e.g. ``model.layers.0.self_attn.qkv_proj``).
        params_dtype: activation dtype, and that of unquantized parameters.
        tp_rank, tp_size: this process's tensor-parallel rank and the number of ranks. ``input_size``,
            ``output_partition_sizes`` and ``output_size`` are then this rank's shares (the subclass decides the
            split; ``ReplicatedLinear`` holds everything on every rank).
    Raises:
        ValueError: the parts of a merged layer disagree on a method; a rank outside [0, tp_size); a size the
            ranks cannot split evenly or a split that would cut a scale block or a packed entry.
        NotImplementedError: ``tp_size`` > 1 with a method that does not declare its parameters' layout.
    """

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False,
                 quant: QuantContext | None = None, prefix: str = "", params_dtype: torch.dtype | None = None,
                 tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        check_tp(tp_rank, tp_size)
        quant = quant or QuantContext()
        params_dtype = params_dtype or torch.get_default_dtype()
        self.prefix, self.tp_rank, self.tp_size = prefix, tp_rank, tp_size
        self.input_shard, self.output_shards = self.split(input_size, list(output_sizes), tp_rank, tp_size)
        self.input_size, self.params_dtype = self.input_shard.size, params_dtype
        self.output_partition_sizes = [s.size for s in self.output_shards]
        self.output_size = sum(self.output_partition_sizes)
        self.checkpoint_prefixes = quant.checkpoint_prefixes(prefix)  # one per part
        self.quant_method: LinearMethod = quant.linear_method(prefix) or UnquantizedLinearMethod()
        self.quant_method.create_weights(self, self.input_size, self.output_partition_sizes, params_dtype)
        if bias:
            self.bias = set_weight_attrs(nn.Parameter(torch.empty(self.output_size, dtype=params_dtype),
                                                      requires_grad=False),
                                         weight_loader=partitioned_loader(self.output_partition_sizes),
                                         output_dim=0, input_dim=None)
        else:
            self.bias = None
        if tp_size > 1:
            for name, param in self.named_parameters(recurse=False):
                check_shardable(prefix, name, param, {"output": self.output_shards, "input": [self.input_shard]})
                param.weight_loader = self._shard_loader(getattr(param, "weight_loader", default_weight_loader))

    def split(self, input_size: int, output_sizes: list[int], tp_rank: int, tp_size: int
              ) -> tuple[Shard, list[Shard]]:
        """This rank's share of the input columns and of each part's output rows: everything (replicated)."""
        return Shard.whole(input_size), [Shard.whole(n) for n in output_sizes]

    def _shard_loader(self, inner):
        def load(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
            if shard_id is None and len(self.output_shards) > 1 and any(s.split for s in self.output_shards):
                raise ValueError(f"{self.prefix}: a merged tensor of all {len(self.output_shards)} parts cannot be "
                                 "split over tensor-parallel ranks; the checkpoint must store the parts apart")
            part = self.output_shards[shard_id if isinstance(shard_id, int) else 0]
            loaded_weight = shard_tensor(param, loaded_weight, "output", part)
            inner(param, shard_tensor(param, loaded_weight, "input", self.input_shard), shard_id)

        return load

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
    """Outputs split over ranks: each rank computes its 1/tp_size of the output features (its share of every
    part's rows, for the merged subclasses)."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, **kwargs):
        super().__init__(input_size, [output_size], bias, **kwargs)

    def split(self, input_size, output_sizes, tp_rank, tp_size):
        return Shard.whole(input_size), [Shard.even(n, tp_rank, tp_size, f"{self.prefix} output features")
                                         for n in output_sizes]


class RowParallelLinear(LinearBase):
    """Inputs split over ranks: each rank multiplies its share of the input features, and the partial outputs
    are summed over the ranks (all-reduce) before the bias is added."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, **kwargs):
        super().__init__(input_size, [output_size], bias, **kwargs)

    def split(self, input_size, output_sizes, tp_rank, tp_size):
        return Shard.even(input_size, tp_rank, tp_size, f"{self.prefix} input features"), [Shard.whole(n)
                                                                                           for n in output_sizes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return self.quant_method.apply(self, x, self.bias)
        y = distributed.all_reduce(self.quant_method.apply(self, x, None))
        return y if self.bias is None else y + self.bias


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel modules of one input in one layer (gate_proj and up_proj: ``gate_up_proj``)."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False, **kwargs):
        LinearBase.__init__(self, input_size, output_sizes, bias, **kwargs)


class QKVParallelLinear(ColumnParallelLinear):
    """q_proj, k_proj and v_proj in one layer (``qkv_proj``): outputs [q heads | k heads | v heads] of this rank.

    Query heads split evenly over the ranks. KV heads too when there are at least as many as ranks; with fewer,
    each KV head is replicated on tp_size / num_kv_heads consecutive ranks (the ranks whose query heads it
    serves), as vLLM does. ``num_heads`` and ``num_kv_heads`` are this rank's counts.

    Raises:
        ValueError: query heads not divisible by tp_size, or KV heads neither a multiple nor a divisor of it.
    """

    def __init__(self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: int,
                 bias: bool = False, **kwargs):
        self.head_size, self.total_num_heads, self.total_num_kv_heads = head_size, total_num_heads, total_num_kv_heads
        q, kv = total_num_heads * head_size, total_num_kv_heads * head_size
        LinearBase.__init__(self, hidden_size, [q, kv, kv], bias, **kwargs)
        self.num_heads = self.output_partition_sizes[0] // head_size
        self.num_kv_heads = self.output_partition_sizes[1] // head_size

    def split(self, input_size, output_sizes, tp_rank, tp_size):
        d, heads, kv_heads = self.head_size, self.total_num_heads, self.total_num_kv_heads
        q = Shard.even(heads, tp_rank, tp_size, f"{self.prefix} query heads")
        if kv_heads >= tp_size:
            kv = Shard.even(kv_heads, tp_rank, tp_size, f"{self.prefix} KV heads")
        elif tp_size % kv_heads:
            raise ValueError(f"{self.prefix}: {kv_heads} KV heads cannot be replicated evenly over {tp_size} "
                             "tensor-parallel ranks (the size must be a multiple of the KV heads)")
        else:
            kv = Shard(tp_rank // (tp_size // kv_heads), 1, kv_heads)
        q, kv = (Shard(s.start * d, s.size * d, s.total * d) for s in (q, kv))
        return Shard.whole(input_size), [q, kv, kv]
