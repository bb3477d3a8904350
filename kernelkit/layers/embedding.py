"""Token embeddings and the LM head (vLLM names). Embeddings are never quantized here; the LM head asks its
``QuantContext`` like any linear layer (schemes leave ``lm_head`` out by default).

With ``tp_size`` > 1 both split the vocabulary into equal contiguous ranges, one per rank (Megatron-LM's
vocab-parallel embedding): the embedding looks up the ids in its range, zeroes the others' rows and sums over
the ranks; the LM head computes its range's logits and gathers every rank's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelkit import distributed
from kernelkit.layers.base import QuantContext, default_weight_loader, set_weight_attrs
from kernelkit.layers.linear import LinearBase
from kernelkit.layers.sharding import Shard, check_tp


class VocabParallelEmbedding(nn.Module):
    """``weight`` [vocab / tp_size, hidden]: this rank's contiguous range of the vocabulary's rows.

    Raises:
        ValueError: a rank outside [0, tp_size), or a vocabulary the ranks cannot split evenly.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, params_dtype: torch.dtype | None = None,
                 prefix: str = "", tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        check_tp(tp_rank, tp_size)
        self.num_embeddings, self.embedding_dim, self.prefix = num_embeddings, embedding_dim, prefix
        self.tp_size, self.shard = tp_size, Shard.even(num_embeddings, tp_rank, tp_size, f"{prefix} vocabulary")
        weight = torch.empty(self.shard.size, embedding_dim, dtype=params_dtype or torch.get_default_dtype())
        self.weight = set_weight_attrs(nn.Parameter(weight, requires_grad=False), weight_loader=self._load,
                                       output_dim=0, input_dim=None)

    def _load(self, param: nn.Parameter, loaded_weight: torch.Tensor, shard_id=None) -> None:
        if self.shard.split and loaded_weight.shape[0] == self.num_embeddings:  # the whole vocabulary: take ours
            loaded_weight = loaded_weight.narrow(0, self.shard.start, self.shard.size)
        default_weight_loader(param, loaded_weight, shard_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids int [...] -> [..., hidden] embeddings (ids in [0, vocab))."""
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.shard.start
        mine = (local >= 0) & (local < self.shard.size)
        out = F.embedding(torch.where(mine, local, 0), self.weight).masked_fill_(~mine.unsqueeze(-1), 0)
        return distributed.all_reduce(out)


class ParallelLMHead(LinearBase):
    """hidden -> vocab logits; ``tie(embedding)`` shares the embedding's weight (tie_word_embeddings). Each rank
    holds the rows of its vocabulary range (as ``VocabParallelEmbedding``) and ``forward`` returns all of the
    vocabulary's logits, gathered from the ranks."""

    def __init__(self, num_embeddings: int, embedding_dim: int, quant: QuantContext | None = None, **kwargs):
        super().__init__(embedding_dim, [num_embeddings], False, quant=quant, **kwargs)

    def split(self, input_size, output_sizes, tp_rank, tp_size):
        return Shard.whole(input_size), [Shard.even(output_sizes[0], tp_rank, tp_size, f"{self.prefix} vocabulary")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.quant_method.apply(self, x, None)
        return logits if self.tp_size == 1 else distributed.all_gather(logits, dim=-1)

    def tie(self, embedding: VocabParallelEmbedding) -> None:
        """Use the embedding's weight (only for an unquantized head)."""
        if not hasattr(self, "weight") or self.weight.dtype != embedding.weight.dtype:
            raise ValueError(f"{self.prefix}: a quantized LM head cannot share the embedding's weight")
        self.weight = embedding.weight
