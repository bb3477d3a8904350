"""What every rank of the engine builds: its share of the model (all of it at tensor-parallel size 1), its
share of the KV cache, sized by the memory budget and agreed across the ranks, and the ``ModelRunner`` over
both. Rank 0 is the engine's own process (``engine.py``); ranks 1..N-1 are the tensor-parallel workers
(``tensor_parallel.py``), which run ``build_worker``."""

from __future__ import annotations

import logging

import torch

from kernelkit.serve.attention.torch_backend import TorchPagedAttention
from kernelkit.serve.config import EngineConfig
from kernelkit.serve.cuda_graph import graph_batch_sizes
from kernelkit.serve.model.loader import load_model
from kernelkit.serve.runner import ModelRunner, kv_bytes_per_block

log = logging.getLogger("kernelkit.serve")


def build_rank(config: EngineConfig, dtype: torch.dtype, device: torch.device, rank: int, group=None):
    """(model, runner, max_model_len) of tensor-parallel ``rank`` of ``config.tensor_parallel_size``; ``group``:
    the ranks' control group, over which they agree on the fewest KV blocks any of them can hold (None: one
    process, in no process group).

    Raises:
        ValueError: no room for one KV block, an explicit max_model_len that does not fit, an unknown attention
            backend, or a model the ranks cannot split; the loader's errors (``load_model``).
    """
    tp_size = config.tensor_parallel_size
    model = load_model(config.model, dtype, device, config.load_format, rank, tp_size)
    backend = attention_backend(config, device)
    graphs = device.type == "cuda" and backend.capturable and not config.enforce_eager
    num_blocks = num_kv_blocks(config, model, device, dtype, reserved=int(graphs))  # graphs' padding rows own one
    if group is not None:
        from kernelkit.serve.tensor_parallel import agree_num_blocks

        num_blocks = agree_num_blocks(num_blocks, group)
    max_model_len = max_model_len_for(config, model, num_blocks * config.block_size, warn=rank == 0)
    runner = ModelRunner(model, num_blocks, config.block_size, dtype, device, backend,
                         graph_batch_sizes(min(config.max_num_seqs, 512)) if graphs else [], max_model_len)
    return model, runner, max_model_len


def build_worker(config: EngineConfig, dtype: torch.dtype, rank: int, group, device: torch.device) -> ModelRunner:
    """A tensor-parallel worker's runner (``tensor_parallel.Workers`` calls it in each worker process)."""
    return build_rank(config, dtype, device, rank, group)[1]


def max_model_len_for(config: EngineConfig, model, kv_tokens: int, warn: bool = True) -> int:
    """``max_model_len``, or by default the model's context (at most 8192) capped to what the KV cache holds
    (logged if ``warn``: by rank 0 only, as every rank comes to the same cap). Raises ValueError if an explicit
    ``max_model_len`` does not fit the KV cache."""
    configured = config.max_model_len
    wanted = configured or min(model.config.max_position_embeddings, 8192)
    if wanted <= kv_tokens:
        return wanted
    if configured:
        raise ValueError(f"max_model_len={configured} does not fit the KV cache, which holds {kv_tokens} tokens: "
                         "lower max_model_len or give the KV cache more memory")
    if warn:
        log.warning("the KV cache holds %d tokens, fewer than the model's context of %d: max_model_len is %d",
                    kv_tokens, wanted, kv_tokens)
    return kv_tokens


def attention_backend(config: EngineConfig, device: torch.device):
    """The configured attention backend (``auto``: Triton on CUDA, torch elsewhere). Raises ValueError for an
    unknown one."""
    choice = config.attention_backend
    if choice == "auto":
        choice = "triton" if device.type == "cuda" else "torch"
    if choice == "triton":
        from kernelkit.serve.attention.triton_backend import TritonPagedAttention

        return TritonPagedAttention()
    if choice == "torch":
        return TorchPagedAttention()
    raise ValueError(f"attention_backend must be auto, torch or triton, got {choice!r}")


def num_kv_blocks(config: EngineConfig, model, device: torch.device, dtype: torch.dtype, reserved: int) -> int:
    """KV blocks that fit the budget, less ``reserved``. On CUDA the budget is what keeps the device's use at
    ``gpu_memory_utilization`` of its memory, counting memory that earlier engines of this process released
    as free. Raises ValueError if not one block fits."""
    per_block = kv_bytes_per_block(model, config.block_size, dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # what loading the weights left in the caching allocator counts as free
        free, total = torch.cuda.mem_get_info(device)
        budget = free - total * (1 - config.gpu_memory_utilization)
        source = (f"gpu_memory_utilization={config.gpu_memory_utilization} of {total / 2**30:.1f} GiB with "
                  f"{free / 2**30:.1f} GiB free leaves {max(budget, 0) / 2**30:.2f} GiB")
    else:
        budget = config.kv_cache_memory
        source = f"kv_cache_memory={budget} bytes"
    num_blocks = int(budget // per_block) - reserved
    if num_blocks < 1:
        raise ValueError(f"no room for a KV cache: {source}, and one block of {config.block_size} tokens "
                         f"takes {per_block} bytes (plus {reserved} reserved); raise the budget")
    return num_blocks
