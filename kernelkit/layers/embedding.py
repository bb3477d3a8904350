"""Token embeddings and the LM head (vLLM names). Embeddings are never quantized here; the LM head asks its
``QuantContext`` like any linear layer (schemes leave ``lm_head`` out by default)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernelkit.layers.base import QuantContext, default_weight_loader, set_weight_attrs
from kernelkit.layers.linear import LinearBase, _check_tp


class VocabParallelEmbedding(nn.Module):
    """``weight`` [vocab, hidden]; rows split over ranks (at tp_size 1: all of them)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, params_dtype: torch.dtype | None = None,
                 prefix: str = "", tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        _check_tp(tp_rank, tp_size)
        self.num_embeddings, self.embedding_dim, self.prefix = num_embeddings, embedding_dim, prefix
        weight = torch.empty(num_embeddings, embedding_dim, dtype=params_dtype or torch.get_default_dtype())
        self.weight = set_weight_attrs(nn.Parameter(weight, requires_grad=False), weight_loader=default_weight_loader)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class ParallelLMHead(LinearBase):
    """hidden -> vocab logits; ``tie(embedding)`` shares the embedding's weight (tie_word_embeddings)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, quant: QuantContext | None = None, **kwargs):
        super().__init__(embedding_dim, [num_embeddings], False, quant=quant, **kwargs)

    def tie(self, embedding: VocabParallelEmbedding) -> None:
        """Use the embedding's weight (only for an unquantized head)."""
        if not hasattr(self, "weight") or self.weight.dtype != embedding.weight.dtype:
            raise ValueError(f"{self.prefix}: a quantized LM head cannot share the embedding's weight")
        self.weight = embedding.weight
