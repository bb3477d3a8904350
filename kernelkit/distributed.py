"""The tensor-parallel group's collectives, on ``torch.distributed``'s default process group (one group: every
rank of the process group is a tensor-parallel rank). NCCL on CUDA, gloo on the CPU: the same calls.

The layers call ``all_reduce`` and ``all_gather`` only when their ``tp_size`` is above 1, so a single process
never needs a process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def backend_for(device: torch.device | str) -> str:
    """"nccl" for a CUDA device, "gloo" otherwise (torch.distributed's backends)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_tensor_parallel(rank: int, world_size: int, init_method: str, device: torch.device | str = "cpu") -> None:
    """Join the process group of ``world_size`` tensor-parallel ranks as ``rank`` (``init_method``: a
    ``tcp://host:port`` or ``file://`` address every rank is given), with the backend for ``device``.

    Raises:
        ValueError: rank outside [0, world_size). RuntimeError: from torch.distributed (a rank that never
            joins times out there).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"tensor parallel: rank {rank} is outside [0, {world_size})")
    dist.init_process_group(backend_for(device), init_method=init_method, rank=rank, world_size=world_size)


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, in place (any shape and dtype the backend takes); returns ``x``."""
    dist.all_reduce(x)
    return x


def all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Every rank's ``x`` (the same shape on each) concatenated along ``dim`` in rank order."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim)
