"""``LLMEngine``: requests in, incremental outputs out, one scheduling step at a time.

step(): schedule -> run the model -> advance computed tokens (and register full blocks for prefix caching)
-> sample the sequences that reached the end of their tokens -> detokenize, check stop conditions -> retire
finished requests, freeing their blocks at once.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernelkit.serve.attention.torch_backend import TorchPagedAttention
from kernelkit.serve.block_manager import BlockManager
from kernelkit.serve.config import EngineConfig
from kernelkit.serve.cuda_graph import graph_batch_sizes
from kernelkit.serve.detokenizer import IncrementalDetokenizer
from kernelkit.serve.model.loader import load_model
from kernelkit.serve.runner import ModelRunner, kv_bytes_per_block
from kernelkit.serve.sampling import SamplingParams, sample
from kernelkit.serve.scheduler import Scheduler
from kernelkit.serve.sequence import Sequence, Status

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class RequestError(ValueError):
    """A request the engine cannot take (empty or too long a prompt, duplicate id)."""


@dataclass
class RequestOutput:
    """A request's state after a step: the whole text so far and what this step added.

    ``prompt_token_ids`` and ``token_ids`` (generated so far) are sliced from the sequence's append-only token
    list when read, so building an output each step copies nothing.
    """

    request_id: str
    text: str
    delta_text: str
    delta_token_ids: list[int]
    finished: bool
    finish_reason: str | None
    _tokens: list[int] = field(repr=False)
    _num_prompt_tokens: int = field(repr=False)
    _num_tokens: int = field(repr=False)
    _logprobs: list | None = field(default=None, repr=False)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self._tokens[:self._num_prompt_tokens]

    @property
    def token_ids(self) -> list[int]:
        return self._tokens[self._num_prompt_tokens:self._num_tokens]

    @property
    def logprobs(self) -> list | None:
        """Per generated token: (token, logprob, top [(token, logprob)]), if the request asked for logprobs."""
        return None if self._logprobs is None else self._logprobs[:self._num_tokens - self._num_prompt_tokens]


class LLMEngine:
    def __init__(self, config: EngineConfig):
        from transformers import AutoTokenizer

        self.config = config
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = DTYPES.get(config.dtype) or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.model = load_model(config.model, dtype, self.device, config.load_format)
        cfg = self.model.config
        self.max_model_len = config.max_model_len or min(cfg.max_position_embeddings, 8192)
        backend = self._backend()
        graphs = self.device.type == "cuda" and backend.capturable and not config.enforce_eager
        num_blocks = self._num_blocks(dtype, reserved=int(graphs))  # graphs' padding rows own a scratch block
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.runner = ModelRunner(self.model, num_blocks, config.block_size, dtype, self.device, backend,
                                  graph_batch_sizes(min(config.max_num_seqs, 512)) if graphs else [],
                                  self.max_model_len)
        self.eos_token_ids = set(cfg.eos_token_ids) | self._generation_eos()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.requests: dict[str, tuple[Sequence, IncrementalDetokenizer]] = {}

    def _backend(self):
        choice = self.config.attention_backend
        if choice == "auto":
            choice = "triton" if self.device.type == "cuda" else "torch"
        if choice == "triton":
            from kernelkit.serve.attention.triton_backend import TritonPagedAttention

            return TritonPagedAttention()
        if choice == "torch":
            return TorchPagedAttention()
        raise ValueError(f"attention_backend must be auto, torch or triton, got {choice!r}")

    def _num_blocks(self, dtype: torch.dtype, reserved: int) -> int:
        """KV blocks that fit the budget, less ``reserved``. On CUDA the budget is what keeps the device's use at
        ``gpu_memory_utilization`` of its memory, counting memory that earlier engines of this process released
        as free. Raises ValueError if not one block fits."""
        per_block = kv_bytes_per_block(self.model, self.config.block_size, dtype)
        if self.device.type == "cuda":
            gc.collect()  # an engine dropped by the caller may still hold its KV cache through reference cycles
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            budget = free - total * (1 - self.config.gpu_memory_utilization)
            source = (f"gpu_memory_utilization={self.config.gpu_memory_utilization} of {total / 2**30:.1f} GiB with "
                      f"{free / 2**30:.1f} GiB free leaves {max(budget, 0) / 2**30:.2f} GiB")
        else:
            budget = self.config.kv_cache_memory
            source = f"kv_cache_memory={budget} bytes"
        num_blocks = int(budget // per_block) - reserved
        if num_blocks < 1:
            raise ValueError(f"no room for a KV cache: {source}, and one block of {self.config.block_size} tokens "
                             f"takes {per_block} bytes (plus {reserved} reserved); raise the budget")
        return num_blocks

    def _generation_eos(self) -> set[int]:
        path = Path(self.config.model) / "generation_config.json"
        eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
        tok_eos = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        return tok_eos | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def validate(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """The prompt's token ids if the engine can take it; touches no engine state (callable from any thread).

        Raises:
            RequestError: empty prompt, token ids outside the vocabulary, or prompt + max_tokens beyond
                max_model_len or the KV cache.
        """
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise RequestError("the prompt is empty")
        if min(ids) < 0 or max(ids) >= self.model.config.vocab_size:
            raise RequestError(f"prompt token ids must be in [0, {self.model.config.vocab_size})")
        total = len(ids) + params.max_tokens
        if total > self.max_model_len:
            raise RequestError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) = {total} exceeds the "
                               f"maximum context length {self.max_model_len}")
        if self.blocks.blocks_needed(total) > self.blocks.num_blocks:
            raise RequestError(f"prompt + max_tokens = {total} tokens do not fit the KV cache "
                               f"({self.blocks.num_blocks * self.blocks.block_size} tokens)")
        return ids

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """Queue a request; returns its prompt token ids.

        Raises:
            RequestError: a duplicate id, or as :meth:`validate`.
        """
        if request_id in self.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        ids = self.validate(prompt, params)
        generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else self.generator
        seq = Sequence(request_id, ids, params, generator)
        self.requests[request_id] = (seq, IncrementalDetokenizer(self.tokenizer, ids, params.stop))
        self.scheduler.add(seq)
        return ids

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its KV blocks. Returns whether it was still running."""
        entry = self.requests.pop(request_id, None)
        if entry is None:
            return False
        self.scheduler.finish(entry[0], "abort")
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[RequestOutput]:
        """Run one forward step; returns an output for every request that produced a token."""
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        logits, picked = self.runner.run(batch)
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            self.blocks.mark_computed(seq)
        seqs = [batch.seqs[i] for i in picked]
        if not seqs:
            return []
        result = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
        return [self._advance(seq, result.tokens[i], result.logprobs[i], result.top_logprobs[i])
                for i, seq in enumerate(seqs)]

    def _advance(self, seq: Sequence, token: int, logprob, top) -> RequestOutput:
        seq.token_ids.append(token)
        if logprob is not None:
            seq.logprobs.append((token, logprob, top))
        detok = self.requests[seq.request_id][1]
        delta, stopped = detok.add(token)
        params = seq.params
        if stopped or (token in self.eos_token_ids and not params.ignore_eos) or token in params.stop_token_ids:
            self._retire(seq, "stop")
        elif seq.num_tokens - seq.num_prompt_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            self._retire(seq, "length")
        return RequestOutput(seq.request_id, detok.text, delta, [token], seq.status is Status.FINISHED,
                             seq.finish_reason, seq.token_ids, seq.num_prompt_tokens, seq.num_tokens,
                             seq.logprobs if params.logprobs is not None else None)

    def _retire(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)
        del self.requests[seq.request_id]
