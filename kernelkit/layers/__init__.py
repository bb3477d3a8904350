"""The runtime layer contract every quantization scheme plugs into (vLLM's and sglang's, in small form).

- ``LinearMethod`` / ``MoEMethod`` (``base.py``): a scheme's ``create_weights`` (parameters under their
  checkpoint names, each with a ``weight_loader``), ``process_weights_after_loading`` and ``apply``.
- Layers declared up front (``linear.py``, ``embedding.py``, ``moe.py``): ``ReplicatedLinear``,
  ``ColumnParallelLinear``, ``MergedColumnParallelLinear``, ``QKVParallelLinear``, ``RowParallelLinear``,
  ``VocabParallelEmbedding``, ``ParallelLMHead``, ``FusedMoE``. Each asks its ``QuantContext`` for a method by
  its checkpoint prefix and takes ``tp_rank``/``tp_size`` (1 until tensor parallelism lands).
- ``loader.py``: the one checkpoint reader, for the engine's models and for transformers models alike.
"""

from kernelkit.layers.base import LinearMethod, MoEMethod, QuantContext, set_weight_attrs
from kernelkit.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from kernelkit.layers.linear import (
    ColumnParallelLinear,
    LinearBase,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
    UnquantizedLinearMethod,
)
from kernelkit.layers.loader import CheckpointMismatch, load_checkpoint, load_tensors
from kernelkit.layers.moe import FusedMoE, UnquantizedFusedMoEMethod

__all__ = [
    "CheckpointMismatch", "ColumnParallelLinear", "FusedMoE", "LinearBase", "LinearMethod",
    "MergedColumnParallelLinear", "MoEMethod", "ParallelLMHead", "QKVParallelLinear", "QuantContext",
    "ReplicatedLinear", "RowParallelLinear", "UnquantizedFusedMoEMethod", "UnquantizedLinearMethod",
    "VocabParallelEmbedding", "load_checkpoint", "load_tensors", "set_weight_attrs",
]
