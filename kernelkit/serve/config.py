"""Engine settings: one frozen dataclass that flows everywhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """Attributes:
        model: HF model directory (e.g. ``kernelkit convert`` output).
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``bf16``, ``fp16`` or ``fp32``.
        device: ``cuda``/``cpu`` (default: cuda if available).
        block_size: tokens per KV-cache block.
        max_num_seqs: sequences running at once.
        max_num_batched_tokens: new tokens per forward step (longer prompts are prefilled in chunks).
        max_model_len: longest prompt + output (default: the model's max_position_embeddings, at most 8192).
        kv_cache_memory: KV-cache bytes on CPU.
        gpu_memory_utilization: share of GPU memory the weights, activations and KV cache may use.
        enable_prefix_caching: share KV blocks of identical prompt prefixes.
        seed: seed of requests that bring none.
        attention_backend: ``auto`` (Triton on GPU, torch on CPU), ``torch`` or ``triton``.
        enforce_eager: never use CUDA graphs. Otherwise, on a GPU with a capturable attention backend, decode
            steps of up to ``min(max_num_seqs, 512)`` sequences replay CUDA graphs captured at start-up.
        load_format: ``auto`` (the checkpoint's safetensors) or ``dummy`` (random weights of the shapes in
            config.json, quantized by its quantization_config if any: for benchmarks, as vLLM's dummy format).
        tensor_parallel_size: processes the model is split over (``kernelkit.serve.tensor_parallel``): gloo on
            CPU, NCCL on CUDA with rank r on cuda:r.
        distributed_executor_backend: ``mp`` runs the ranks as processes in a process group (what
            ``tensor_parallel_size`` above 1 always does), ``uni`` runs the one rank in this process without one;
            None (default): ``mp`` above one rank, ``uni`` at one. ``mp`` at one rank runs the tensor-parallel
            path (process group, NCCL on CUDA; no step broadcast, as there is no worker) with nothing to split,
            as vLLM's option of the same name does: to check that path, or its cost, on one GPU.
    """

    model: str
    dtype: str = "auto"
    device: str | None = None
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    kv_cache_memory: int = 1 << 30
    gpu_memory_utilization: float = 0.85
    enable_prefix_caching: bool = True
    seed: int = 0
    load_format: str = "auto"
    attention_backend: str = "auto"
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None
