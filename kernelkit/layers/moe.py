"""``FusedMoE``: the experts of one MoE block as stacked parameters behind a ``MoEMethod`` (vLLM's layer
and names: ``w13_weight`` [E, 2I, H], ``w2_weight`` [E, H, I]). Checkpoint tensors
``experts.{e}.{gate,up,down}_proj.*`` reach them through :meth:`FusedMoE.checkpoint_rules`.

Over tensor-parallel ranks every rank holds every expert and 1/tp_size of its intermediate size I (vLLM's
default split, not expert parallelism): gate and up are column-parallel, down is row-parallel, and the experts'
partial outputs are summed over the ranks. A method declares, per parameter, where one expert's checkpoint
tensor has its output and input dimensions (``output_dim`` / ``input_dim``, as for linear layers:
``kernelkit.layers.sharding``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kernelkit import distributed
from kernelkit.layers.base import MoEMethod, QuantContext, default_weight_loader, set_weight_attrs
from kernelkit.layers.sharding import Shard, check_shardable, check_tp, shard_tensor
from kernelkit.ops.moe.ops import fused_experts
from kernelkit.ops.moe.reference import (
    fused_moe_dense,
    select_experts,
)


def expert_loader(intermediate_size: int, stacked: bool):
    """``weight_loader`` of a stacked expert parameter: ``shard_id`` (expert, j) places one checkpoint
    tensor into expert e's slice (for w13: j 0 gate rows 0..I-1, j 1 up rows I..2I-1); without a shard id
    the tensor must be the whole stacked parameter."""

    def load(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        if shard_id is None:
            return default_weight_loader(param, loaded_weight)
        expert, j = shard_id
        target = param.data[expert]
        if stacked:
            target = target.narrow(0, j * intermediate_size, intermediate_size)
        if tuple(target.shape) != tuple(loaded_weight.shape):
            raise ValueError(f"expert {expert} part {j}: shape {list(loaded_weight.shape)}, expected "
                             f"{list(target.shape)}")
        target.copy_(loaded_weight)

    return load


@dataclass(frozen=True)
class UnquantizedFusedMoEMethod(MoEMethod):
    """Experts in the activation dtype. On a GPU, bf16/fp16 experts run the Triton fused MoE kernels (the
    ``fused_experts`` op: 1.4-2.3x faster than two ``torch._grouped_mm`` calls at Qwen3-30B-A3B's shapes,
    benches/RESULTS.md, 2026-12-07); fp32 ones every expert on every token (exact fp32, no tf32; no host
    synchronisation, so CUDA graphs can capture it). On the CPU ``torch._grouped_mm`` where torch takes the dtype,
    else the per-expert reference."""

    def create_weights(self, layer, num_experts, hidden_size, intermediate_size, params_dtype):
        w13 = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size, dtype=params_dtype),
                           requires_grad=False)
        w2 = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size, dtype=params_dtype),
                          requires_grad=False)
        layer.register_parameter("w13_weight", set_weight_attrs(w13, weight_loader=expert_loader(intermediate_size,
                                                                                                 True),
                                                                output_dim=0, input_dim=1))
        layer.register_parameter("w2_weight", set_weight_attrs(w2, weight_loader=expert_loader(intermediate_size,
                                                                                               False),
                                                               output_dim=0, input_dim=1))

    def apply(self, layer, x, topk_weights, topk_ids):
        if x.is_cuda and x.dtype == torch.float32 and x.shape[0]:
            return fused_moe_dense(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids)
        return fused_experts(x, layer.w13_weight, layer.w2_weight, topk_weights, topk_ids)


class FusedMoE(nn.Module):
    """forward(x [T, H], router_logits [T, E]) -> [T, H]: softmax top-k routing, then the method's experts.

    Args:
        num_experts, top_k, hidden_size, intermediate_size: E, k, H, I (per expert).
        renormalize: renormalise the top-k weights to sum to 1 (Qwen3-MoE's ``norm_topk_prob``).
        quant: picks the method by ``prefix`` (None: unquantized).
        tp_rank, tp_size: this rank's share of every expert's intermediate size (``intermediate_size`` is the
            whole I; the parameters hold I / tp_size).
    Raises:
        ValueError: tp_size does not divide I. NotImplementedError: a method that declares no split, at
            tp_size > 1.
    """

    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 renormalize: bool = True, quant: QuantContext | None = None, prefix: str = "",
                 params_dtype: torch.dtype | None = None, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        check_tp(tp_rank, tp_size)
        self.num_experts, self.top_k, self.renormalize, self.prefix = num_experts, top_k, renormalize, prefix
        self.tp_size, self.shard = tp_size, Shard.even(intermediate_size, tp_rank, tp_size,
                                                       f"{prefix} expert intermediate size")
        self.hidden_size, self.intermediate_size = hidden_size, self.shard.size
        self.quant_method: MoEMethod = (quant or QuantContext()).moe_method(prefix) or UnquantizedFusedMoEMethod()
        self.quant_method.create_weights(self, num_experts, hidden_size, self.intermediate_size,
                                         params_dtype or torch.get_default_dtype())
        if tp_size > 1:
            for name, param in self.named_parameters(recurse=False):
                # gate/up parts: their rows split (column-parallel); down: its columns (row-parallel)
                dim_name = "input" if name.startswith("w2_") else "output"
                check_shardable(prefix, name, param, {dim_name: [self.shard]})
                param.weight_loader = self._shard_loader(param.weight_loader, dim_name)

    def _shard_loader(self, inner, dim_name: str):
        def load(param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
            if shard_id is None:
                raise ValueError(f"{self.prefix}: stacked expert tensors cannot be split over tensor-parallel "
                                 "ranks; the checkpoint must store each expert's projections apart")
            inner(param, shard_tensor(param, loaded_weight, dim_name, self.shard), shard_id)

        return load

    @staticmethod
    def checkpoint_rules(num_experts: int) -> list[tuple[str, str, tuple[int, int]]]:
        """(checkpoint name fragment, parameter name fragment, shard id) for every expert's gate, up and down
        projections: ``.experts.3.up_proj.`` -> ``.experts.w13_`` with shard (3, 1)."""
        rules = []
        for e in range(num_experts):
            rules += [(f".experts.{e}.gate_proj.", ".experts.w13_", (e, 0)),
                      (f".experts.{e}.up_proj.", ".experts.w13_", (e, 1)),
                      (f".experts.{e}.down_proj.", ".experts.w2_", (e, 0))]
        return rules

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        topk_weights, topk_ids = select_experts(router_logits, self.top_k, self.renormalize)
        out = self.quant_method.apply(self, x, topk_weights, topk_ids)
        return out if self.tp_size == 1 else distributed.all_reduce(out)
