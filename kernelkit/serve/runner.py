"""Turns a scheduled batch into model inputs, runs the forward step and returns logits of the rows to sample.

Rows: each sequence's new tokens, flattened. A sequence is sampled when its chunk reaches the end of its known
tokens (a finished prefill, or a decode step); a partial prefill chunk only fills the cache. Steps in which
every sequence feeds one token go through CUDA graphs when the runner has them (:mod:`cuda_graph`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata
from kernelkit.serve.cuda_graph import DecodeGraphs
from kernelkit.serve.model.llama import LlamaForCausalLM
from kernelkit.serve.scheduler import ScheduledBatch


def kv_bytes_per_block(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    cfg = model.config  # this rank's KV heads: a tensor-parallel rank caches only its own
    return cfg.num_layers * 2 * block_size * model.num_kv_heads * cfg.head_dim * dtype.itemsize


@dataclass
class HostInputs:
    """A step's inputs as host lists: T rows of new tokens, B sequences."""

    input_ids: list[int]  # [T]
    positions: list[int]  # [T]
    slot_mapping: list[int]  # [T]
    query_start_loc: list[int]  # [B + 1]
    context_lens: list[int]  # [B]
    block_tables: list[list[int]]  # B rows of block ids (unpadded)
    sample_rows: list[int]  # [B], the row each sequence samples from, or -1

    @property
    def max_query_len(self) -> int:
        """The most new tokens of one sequence (1: a pure decode step)."""
        return max(b - a for a, b in zip(self.query_start_loc, self.query_start_loc[1:], strict=False))


def host_inputs(batch: ScheduledBatch, block_size: int) -> HostInputs:
    ids, positions, slots, starts, ctx_lens, sample_rows = [], [], [], [0], [], []
    for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
        first = seq.num_computed_tokens
        ids += seq.token_ids[first:first + n]
        pos = range(first, first + n)
        positions += pos
        slots += [seq.block_table[p // block_size] * block_size + p % block_size for p in pos]
        starts.append(starts[-1] + n)
        ctx_lens.append(first + n)
        sample_rows.append(starts[-1] - 1 if first + n == seq.num_tokens else -1)
    return HostInputs(ids, positions, slots, starts, ctx_lens, [s.block_table for s in batch.seqs], sample_rows)


class ModelRunner:
    """Owns the KV caches (``num_blocks`` per layer, plus one scratch block when ``graph_sizes`` is given) and
    runs steps; ``graph_sizes``: decode batch sizes to capture as CUDA graphs (empty: always eager). On rank 0
    of a tensor-parallel engine, ``workers`` (``tensor_parallel.Workers``) are told every call first."""

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, backend: AttentionBackend, graph_sizes: list[int] = (),
                 max_model_len: int = 0):
        cfg = model.config
        self.model, self.block_size, self.device, self.backend = model, block_size, device, backend
        self.num_blocks = num_blocks
        blocks = num_blocks + (1 if graph_sizes else 0)
        self.kv_caches = [torch.zeros(2, blocks, block_size, model.num_kv_heads, cfg.head_dim, dtype=dtype,
                                      device=device) for _ in range(cfg.num_layers)]
        self.graphs, self.workers, self.extra_hidden = None, None, None  # workers: rank 0's tensor-parallel peers
        if graph_sizes:
            with torch.inference_mode():
                self.graphs = DecodeGraphs(model, self.kv_caches, backend, list(graph_sizes),
                                           -(-max_model_len // block_size), num_blocks, block_size, max_model_len,
                                           device, capture=device.type == "cuda")

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """(input_ids [T], positions [T], metadata, row of each sampled sequence or -1)."""
        return self._device_inputs(host_inputs(batch, self.block_size))

    def _device_inputs(self, h: HostInputs) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        width = max(len(t) for t in h.block_tables)
        tables = [t + [-1] * (width - len(t)) for t in h.block_tables]
        as_tensor = lambda x, dtype: torch.tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        meta = AttentionMetadata(as_tensor(h.query_start_loc, torch.int32), as_tensor(h.context_lens, torch.int32),
                                 as_tensor(tables, torch.int32), as_tensor(h.slot_mapping, torch.int64),
                                 h.max_query_len, max(h.context_lens))
        return as_tensor(h.input_ids, torch.int64), as_tensor(h.positions, torch.int64), meta, h.sample_rows

    def run(self, batch: ScheduledBatch, extra_rows: list[int] = ()
            ) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
        """(fp32 logits [S, vocab] of the sampled sequences, their indices in the batch, final hidden states
        [E, hidden] of ``extra_rows``, rows of the flattened new tokens, e.g. for prompt logprobs; None if none
        were asked for). With tensor-parallel ``workers``, every rank runs the same step."""
        h = host_inputs(batch, self.block_size)
        if self.workers is not None:
            self.workers.broadcast(("execute", h, list(extra_rows)))
        return self.execute(h, list(extra_rows))

    @torch.inference_mode()
    def execute(self, h: HostInputs, extra_rows: list[int]) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
        """:meth:`run` on a step's host inputs (what a tensor-parallel worker is sent)."""
        if self.graphs is not None and h.max_query_len == 1 and self.graphs.fits(len(h.context_lens)):
            hidden = self.graphs.run(h.input_ids, h.positions, h.slot_mapping, h.context_lens, h.block_tables)
        else:
            ids, positions, meta, _ = self._device_inputs(h)
            hidden = self.model(ids, positions, self.kv_caches, meta, self.backend)
        rows = h.sample_rows
        extra = hidden[extra_rows] if extra_rows else None
        self.extra_hidden = extra
        picked = [i for i, row in enumerate(rows) if row >= 0]
        if not picked:
            return torch.empty(0, self.model.config.vocab_size, device=self.device), [], extra
        return self.model.compute_logits(hidden[[rows[i] for i in picked]]), picked, extra

    @torch.inference_mode()
    def extra_logits(self, start: int, stop: int) -> torch.Tensor:
        """fp32 logits [stop - start, vocab] of rows [start, stop) of the last step's ``extra_rows`` hidden
        states (on every rank, when tensor parallel: the LM head gathers the vocabulary over them)."""
        if self.workers is not None:
            self.workers.broadcast(("extra_logits", start, stop))
        return self.model.compute_logits(self.extra_hidden[start:stop])
