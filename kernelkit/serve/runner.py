"""Turns a scheduled batch into model inputs, runs the forward step and returns logits of the rows to sample.

Rows: each sequence's new tokens, flattened. A sequence is sampled when its chunk reaches the end of its known
tokens (a finished prefill, or a decode step); a partial prefill chunk only fills the cache.
"""

from __future__ import annotations

import torch

from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata
from kernelkit.serve.model.llama import LlamaForCausalLM
from kernelkit.serve.scheduler import ScheduledBatch


def kv_bytes_per_block(model: LlamaForCausalLM, block_size: int, dtype: torch.dtype) -> int:
    cfg = model.config
    return cfg.num_layers * 2 * block_size * cfg.num_kv_heads * cfg.head_dim * dtype.itemsize


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, backend: AttentionBackend):
        cfg = model.config
        self.model, self.block_size, self.device, self.backend = model, block_size, device, backend
        self.kv_caches = [torch.zeros(2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim, dtype=dtype,
                                      device=device) for _ in range(cfg.num_layers)]

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """(input_ids [T], positions [T], metadata, row of each sampled sequence or -1)."""
        ids, positions, slots, starts, ctx_lens, sample_rows = [], [], [], [0], [], []
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            first = seq.num_computed_tokens
            ids += seq.token_ids[first:first + n]
            pos = range(first, first + n)
            positions += pos
            slots += [seq.block_table[p // self.block_size] * self.block_size + p % self.block_size for p in pos]
            starts.append(starts[-1] + n)
            ctx_lens.append(first + n)
            sample_rows.append(starts[-1] - 1 if first + n == seq.num_tokens else -1)
        width = max(len(s.block_table) for s in batch.seqs)
        tables = [s.block_table + [-1] * (width - len(s.block_table)) for s in batch.seqs]
        as_tensor = lambda x, dtype: torch.tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        meta = AttentionMetadata(as_tensor(starts, torch.int32), as_tensor(ctx_lens, torch.int32),
                                 as_tensor(tables, torch.int32), as_tensor(slots, torch.int64),
                                 max(batch.num_new_tokens), max(ctx_lens))
        return as_tensor(ids, torch.int64), as_tensor(positions, torch.int64), meta, sample_rows

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[int]]:
        """(fp32 logits [S, vocab] of the sampled sequences, their indices in the batch)."""
        ids, positions, meta, rows = self.prepare(batch)
        hidden = self.model(ids, positions, self.kv_caches, meta, self.backend)
        picked = [i for i, row in enumerate(rows) if row >= 0]
        if not picked:
            return torch.empty(0, self.model.config.vocab_size, device=self.device), []
        return self.model.compute_logits(hidden[[rows[i] for i in picked]]), picked
