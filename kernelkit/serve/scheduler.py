"""Continuous batching: which sequences run in the next forward step, and with how many new tokens.

Each step: running sequences first, oldest first (a decode token each, or their next prefill chunk), then
waiting ones in arrival order while token and sequence budgets last. Prompts longer than the remaining token
budget are prefilled in chunks over several steps (chunked prefill). A waiting sequence is admitted only if
blocks for its whole current length are free. When a running sequence needs a block and none is free, the
newest running sequence is preempted: its blocks are released and it goes back to the front of the queue, to
be recomputed later (vLLM's recompute preemption). Nothing waits on anything a later step cannot free, so
the loop cannot deadlock as long as one sequence fits the cache, which admission checks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from kernelkit.serve.block_manager import BlockManager
from kernelkit.serve.sequence import Sequence, Status


@dataclass
class ScheduledBatch:
    """Sequences of one step and the number of new tokens each feeds."""

    seqs: list[Sequence]
    num_new_tokens: list[int]

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.release(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch([], [])
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if seq.status is not Status.RUNNING or budget == 0:  # preempted below, or out of token budget
                continue
            n = min(seq.num_uncomputed, budget)
            while n == 1 and not self.blocks.can_append(seq):  # a decode step that needs a new block
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:
                continue
            self.blocks.append_slot(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed, budget)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return batch

    def finish(self, seq: Sequence, reason: str) -> None:
        """Retire a sequence (finished or aborted) and free its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.release(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status, seq.finish_reason = Status.FINISHED, reason
