"""How a tensor-parallel rank takes its slice of a checkpoint tensor (Megatron-LM's column and row split, as
vLLM's parallel linear layers apply it).

A layer that splits over ranks describes this rank's share of each checkpoint part as a ``Shard`` of rows
along one logical dimension of the weight [N, K]: output rows N for column-parallel layers, input columns K
for row-parallel ones. A method's parameters say where those dimensions are in their own layout through two
attributes each (``set_weight_attrs``):

- ``output_dim`` / ``input_dim``: the parameter's dimension indexed by N / by K, or None if it has none
  (a per-channel scale [N, 1] has ``input_dim`` None, a bias ``input_dim`` None);
- ``output_per_entry`` / ``input_per_entry`` (default 1): how many rows of N / K one entry along that
  dimension covers: 128 for a 128 x 128 block-scale grid, 2 for two int4 values packed along N.

``shard_tensor`` narrows a checkpoint tensor to the rank's entries; ``check_shardable`` refuses, before any
tensor is read, a split whose boundaries would cut a block or a packed entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DIMS = ("output", "input")


@dataclass(frozen=True)
class Shard:
    """Rows [start, start + size) of a dimension of ``total`` rows: one rank's share."""

    start: int
    size: int
    total: int

    @classmethod
    def whole(cls, total: int) -> Shard:
        return cls(0, total, total)

    @classmethod
    def even(cls, total: int, rank: int, ranks: int, what: str) -> Shard:
        """The rank's equal share. Raises ValueError naming ``what`` when ``ranks`` does not divide ``total``."""
        if total % ranks:
            raise ValueError(f"{what}: {total} is not divisible by the tensor-parallel size {ranks}")
        size = total // ranks
        return cls(rank * size, size, total)

    @property
    def split(self) -> bool:
        return self.size != self.total


def check_tp(tp_rank: int, tp_size: int) -> None:
    """Raises ValueError unless 0 <= tp_rank < tp_size."""
    if tp_size < 1 or not 0 <= tp_rank < tp_size:
        raise ValueError(f"tensor parallel: rank {tp_rank} of size {tp_size} is not a rank")


def _layout(param: nn.Parameter, dim_name: str) -> tuple[int | None, int]:
    return getattr(param, f"{dim_name}_dim"), getattr(param, f"{dim_name}_per_entry", 1)


def check_shardable(prefix: str, name: str, param: nn.Parameter, shards: dict[str, list[Shard]]) -> None:
    """Raise, before loading, if ``param`` cannot take the split ``shards`` (dimension name -> each part's
    shard). Raises NotImplementedError if the parameter does not declare its layout (a method that has no
    tensor-parallel support yet), ValueError if a shard boundary is not on a whole entry (block or pack)."""
    for dim_name, parts in shards.items():
        if not any(s.split for s in parts):
            continue
        if not hasattr(param, f"{dim_name}_dim"):
            raise NotImplementedError(f"{prefix}.{name}: its method does not declare how it splits over "
                                      f"tensor-parallel ranks ({dim_name}_dim); it runs at tensor-parallel size 1")
        dim, per = _layout(param, dim_name)
        if dim is None:
            continue
        for s in parts:
            if s.start % per or s.size % per:
                raise ValueError(f"{prefix}.{name}: this rank's {dim_name} rows [{s.start}, {s.start + s.size}) of "
                                 f"{s.total} are not whole {per}-row blocks; choose a tensor-parallel size whose "
                                 f"share of {s.total} is a multiple of {per}")


def shard_tensor(param: nn.Parameter, loaded: torch.Tensor, dim_name: str, shard: Shard) -> torch.Tensor:
    """The rank's entries of the checkpoint tensor ``loaded`` (one whole part) along ``param``'s dimension of
    ``dim_name``: ``loaded`` itself when the shard is whole or the parameter has no such dimension."""
    dim, per = _layout(param, dim_name) if hasattr(param, f"{dim_name}_dim") else (None, 1)
    if dim is None or not shard.split:
        return loaded
    return loaded.narrow(dim, shard.start // per, shard.size // per)
