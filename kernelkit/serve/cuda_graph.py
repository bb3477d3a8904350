"""CUDA graphs of the decode forward step at a ladder of batch sizes (vLLM's and nano-vllm's scheme).

A decode step launches a few hundred small kernels; replaying a graph removes their CPU launch cost. One graph
per batch size in :func:`graph_batch_sizes`, all captured over the same static input buffers and one memory
pool, largest first. A batch of n decode rows replays the smallest graph of size b >= n; rows n..b-1 are padding:
token 0 at position 0, context length 1, in a scratch KV block that no sequence owns, so they touch nothing
real and their (discarded) outputs stay finite.

Capture needs every kernel compiled and every one-time probe (e.g. cuBLAS block-FP8) done, so each size runs
once eagerly, on the same buffers, right before it is captured. With ``capture=False`` the runner replays by
calling the model eagerly on the padded buffers: the same inputs a graph would see (used on CPU in tests).
"""

from __future__ import annotations

import torch

from kernelkit.serve.attention.backend import AttentionBackend, AttentionMetadata


def graph_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16, up to and including ``max_batch_size`` (nano-vllm's ladder)."""
    sizes = [b for b in (1, 2, 4, 8, *range(16, max_batch_size + 1, 16)) if b <= max_batch_size]
    return sizes if sizes[-1] == max_batch_size else [*sizes, max_batch_size]


class DecodeGraphs:
    """Decode forward (one new token per sequence) through captured CUDA graphs.

    Args:
        model: the LlamaForCausalLM; ``model(input_ids, positions, kv_caches, meta, backend)`` -> hidden [T, H].
        kv_caches: the per-layer caches; block ``scratch_block`` of each is reserved for padding rows.
        backend: a capturable attention backend (no host synchronization; launch shapes from ``max_query_len``).
        sizes: batch sizes to capture (:func:`graph_batch_sizes`).
        max_blocks_per_seq: width of the static block table (ceil(max_model_len / block_size)).
        capture: False replays eagerly (no CUDA needed).
    """

    def __init__(self, model, kv_caches: list[torch.Tensor], backend: AttentionBackend, sizes: list[int],
                 max_blocks_per_seq: int, scratch_block: int, block_size: int, max_model_len: int,
                 device: torch.device, capture: bool = True):
        self.model, self.kv_caches, self.backend, self.sizes = model, kv_caches, backend, sorted(sizes)
        self.scratch_block, self.scratch_slot = scratch_block, scratch_block * block_size
        b, i32, i64 = self.sizes[-1], torch.int32, torch.int64
        self.input_ids = torch.zeros(b, dtype=i64, device=device)
        self.positions = torch.zeros(b, dtype=i64, device=device)
        self.slot_mapping = torch.full((b,), self.scratch_slot, dtype=i64, device=device)
        self.context_lens = torch.ones(b, dtype=i32, device=device)
        self.block_tables = torch.full((b, max_blocks_per_seq), scratch_block, dtype=i32, device=device)
        self.query_start_loc = torch.arange(b + 1, dtype=i32, device=device)  # one row per sequence, always
        self.max_model_len = max_model_len
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        pool = None
        for size in reversed(self.sizes):
            self.outputs[size] = self._forward(size)  # warm-up: compiles, probes; also the eager replay's output
            if capture:
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.outputs[size] = self._forward(size)
                pool = graph.pool()
                self.graphs[size] = graph

    def _forward(self, size: int) -> torch.Tensor:
        meta = AttentionMetadata(self.query_start_loc[:size + 1], self.context_lens[:size], self.block_tables[:size],
                                 self.slot_mapping[:size], 1, self.max_model_len)
        return self.model(self.input_ids[:size], self.positions[:size], self.kv_caches, meta, self.backend)

    def fits(self, num_seqs: int) -> bool:
        return num_seqs <= self.sizes[-1]

    def run(self, input_ids: list[int], positions: list[int], slot_mapping: list[int], context_lens: list[int],
            block_tables: list[list[int]]) -> torch.Tensor:
        """Hidden states [n, H] of n decode rows (host lists as ModelRunner builds them; n <= max size)."""
        n = len(input_ids)
        size = next(s for s in self.sizes if s >= n)
        pad = size - n
        width = max(len(t) for t in block_tables)
        tables = [t + [-1] * (width - len(t)) for t in block_tables] + [[self.scratch_block] * width] * pad
        for buf, values in ((self.input_ids, input_ids + [0] * pad), (self.positions, positions + [0] * pad),
                            (self.slot_mapping, slot_mapping + [self.scratch_slot] * pad),
                            (self.context_lens, context_lens + [1] * pad)):
            buf[:size].copy_(torch.tensor(values, dtype=buf.dtype), non_blocking=True)
        self.block_tables[:size, :width].copy_(torch.tensor(tables, dtype=torch.int32), non_blocking=True)
        if size in self.graphs:
            self.graphs[size].replay()
        else:
            self.outputs[size] = self._forward(size)
        return self.outputs[size][:n]
