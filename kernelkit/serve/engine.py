"""``LLMEngine``: requests in, incremental outputs out, one scheduling step at a time.

step(): schedule -> run the model -> advance computed tokens (and register full blocks for prefix caching)
-> sample the sequences that reached the end of their tokens -> detokenize, check stop conditions -> retire
finished requests, freeing their blocks at once.

Batch composition: the sampler works row by row (``sampling.py``), so what a seeded request produces depends
on the other requests of its steps only through its logits. What holds for those:
- CPU: attention runs one sequence at a time and norms, rotary and activations row by row; the matmuls of
  unquantized layers take BLAS's M-dependent reduction order, ~1e-6 of logprob in fp32; the block-FP8
  reference GEMM accumulates in float64, so fp8-block models drift as little (tests/test_serve_scoring.py).
- GPU: kernels are chosen by batch size (the block-FP8 GEMM: split-K Triton below 16 rows, cuBLAS from 16;
  cuBLAS's own per-shape choices in bf16), so logits differ at rounding level between batch compositions, and
  in bf16 or fp8 that can change a sampled token, as in vLLM and sglang outside their batch-invariant modes.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernelkit.serve.block_manager import BlockManager
from kernelkit.serve.config import EngineConfig
from kernelkit.serve.detokenizer import IncrementalDetokenizer
from kernelkit.serve.model.loader import build_model
from kernelkit.serve.rank import build_rank, build_worker
from kernelkit.serve.sampling import SamplingParams, gather_logprobs, sample
from kernelkit.serve.scheduler import Scheduler
from kernelkit.serve.sequence import Sequence, Status

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROMPT_LOGPROB_ROWS = 256  # prompt positions turned into vocabulary-wide logits at a time (bounds the memory)

log = logging.getLogger("kernelkit.serve")


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
    _prompt_logprobs: list | None = field(default=None, repr=False)

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

    @property
    def prompt_logprobs(self) -> list | None:
        """Per prompt token after the first: (token, logprob given the tokens before it, top [(token, logprob)]),
        if the request asked for prompt logprobs (complete once the prompt is prefilled)."""
        return self._prompt_logprobs


def _executor(config: EngineConfig, device: torch.device) -> str:
    """``mp`` or ``uni`` (EngineConfig.distributed_executor_backend). Raises ValueError for another value, or
    ``uni`` with more than one rank, or more CUDA ranks than visible GPUs."""
    choice = config.distributed_executor_backend or ("mp" if config.tensor_parallel_size > 1 else "uni")
    if choice not in ("mp", "uni"):
        raise ValueError(f"distributed_executor_backend must be mp or uni, got {choice!r}")
    if choice == "mp" and device.type == "cuda" and config.tensor_parallel_size > torch.cuda.device_count():
        raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size} needs as many GPUs (rank r runs on "
                         f"cuda:r); {torch.cuda.device_count()} visible")
    if choice == "uni" and config.tensor_parallel_size > 1:
        raise ValueError(f"distributed_executor_backend='uni' runs one rank; tensor_parallel_size is "
                         f"{config.tensor_parallel_size}: use 'mp'")
    return choice


class LLMEngine:
    """The engine. With ``tensor_parallel_size`` N > 1 (or the ``mp`` executor) this process is rank 0 of N
    (``tensor_parallel.py``): it starts ranks 1..N-1 as worker processes, each loading its share of the model;
    ``close`` stops them."""

    def __init__(self, config: EngineConfig):
        from transformers import AutoTokenizer

        self.config = config
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = DTYPES.get(config.dtype) or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        if self.device.type == "cuda":
            gc.collect()  # an engine dropped by the caller may still hold its weights and KV cache through cycles
            torch.cuda.empty_cache()
        self.workers = None
        if _executor(config, self.device) == "mp":
            from kernelkit.serve.tensor_parallel import Workers

            for rank in range(config.tensor_parallel_size):  # every rank's split, on meta, before any process starts
                build_model(config.model, dtype, "meta", rank, config.tensor_parallel_size)
            self.workers = Workers(functools.partial(build_worker, config, dtype), config.tensor_parallel_size,
                                   self.device)
        try:
            self.model, self.runner, self.max_model_len = build_rank(
                config, dtype, self.device, 0, self.workers.group if self.workers else None)
        except BaseException:
            self.close()
            raise
        self.runner.workers = self.workers
        cfg = self.model.config
        self.blocks = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.eos_token_ids = set(cfg.eos_token_ids) | self._generation_eos()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.requests: dict[str, tuple[Sequence, IncrementalDetokenizer]] = {}
        self.last_step_request_ids: list[str] = []  # the requests of the latest step, for failing them on error

    def close(self) -> None:
        """Stop the tensor-parallel workers, if any (a single-process engine holds nothing to stop)."""
        if self.workers is not None:
            self.workers.close()

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
        """Run one forward step; returns an output for every request that produced a token (or, with
        ``max_tokens`` 0, finished its prompt). If it raises, ``last_step_request_ids`` names the requests the
        step was running."""
        batch = self.scheduler.schedule()
        self.last_step_request_ids = [s.request_id for s in batch.seqs]
        if not batch.seqs:
            return []
        scored = _prompt_logprob_rows(batch)
        logits, picked, _ = self.runner.run(batch, [row for row, _, _ in scored])
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            seq.num_computed_tokens += n
            self.blocks.mark_computed(seq)
        if scored:
            self._record_prompt_logprobs(scored)
        outs = [self._finish_scoring(batch.seqs[i]) for i in picked if batch.seqs[i].params.max_tokens == 0]
        keep = [j for j, i in enumerate(picked) if batch.seqs[i].params.max_tokens > 0]
        seqs = [batch.seqs[picked[j]] for j in keep]
        if not seqs:
            return outs
        result = sample(logits[keep], [s.params for s in seqs], [s.generator for s in seqs])
        return outs + [self._advance(seq, result.tokens[i], result.logprobs[i], result.top_logprobs[i])
                       for i, seq in enumerate(seqs)]

    @torch.inference_mode()
    def _record_prompt_logprobs(self, scored: list[tuple[int, Sequence, int]]) -> None:
        """Append each scored position's prompt logprob to its sequence, a few hundred rows of logits at a time."""
        for start in range(0, len(scored), PROMPT_LOGPROB_ROWS):
            chunk = scored[start:start + PROMPT_LOGPROB_ROWS]
            logits = self.runner.extra_logits(start, start + len(chunk))
            for (_, seq, pos), row in zip(chunk, range(len(chunk)), strict=True):
                seq.prompt_logprobs.append(gather_logprobs(logits[row:row + 1], [seq.token_ids[pos + 1]],
                                                           seq.params.prompt_logprobs)[0])

    def _finish_scoring(self, seq: Sequence) -> RequestOutput:
        """A ``max_tokens`` 0 request whose prompt is done: nothing to generate."""
        self._retire(seq, "length")
        return self._output(seq, "", "", [])

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
        return self._output(seq, detok.text, delta, [token])

    def _output(self, seq: Sequence, text: str, delta: str, delta_ids: list[int]) -> RequestOutput:
        params = seq.params
        return RequestOutput(seq.request_id, text, delta, delta_ids, seq.status is Status.FINISHED,
                             seq.finish_reason, seq.token_ids, seq.num_prompt_tokens, seq.num_tokens,
                             seq.logprobs if params.logprobs is not None else None,
                             seq.prompt_logprobs if params.prompt_logprobs is not None else None)

    def _retire(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)
        del self.requests[seq.request_id]


def _prompt_logprob_rows(batch) -> list[tuple[int, Sequence, int]]:
    """(row in the step's flattened tokens, sequence, position p) for every position whose logits score prompt
    token p + 1 and that the sequence has not scored yet (a preempted sequence recomputes its prompt)."""
    rows, offset = [], 0
    for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
        if seq.params.prompt_logprobs is not None:
            first = seq.num_computed_tokens
            for pos in range(max(first, len(seq.prompt_logprobs)), min(first + n, seq.num_prompt_tokens - 1)):
                rows.append((offset + pos - first, seq, pos))
        offset += n
    return rows
