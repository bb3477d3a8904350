"""KV-cache block allocation with reference counts and prefix caching.

A full block is identified by a hash chained over all tokens up to its end (hash of the previous block's hash
and its own token ids). When a new sequence's leading full blocks match blocks in the cache, and their stored
token ids are equal (hashes can collide), it shares them instead of recomputing. Blocks enter the prefix cache
only once their K/V has been computed. A freed block keeps its contents and hash until it is reused, so later
requests can still hit it. Sources: vLLM automatic prefix caching; nano-vllm's block manager.
"""

from __future__ import annotations

from collections import OrderedDict

from kernelkit.serve.sequence import Sequence


def _chain_hash(prev: int, tokens: list[int]) -> int:
    return hash((prev, tuple(tokens)))


class BlockManager:
    """Owns ``num_blocks`` blocks of ``block_size`` token slots."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.block_size, self.prefix_caching = block_size, prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # hash -> block id (computed, full blocks)
        # free blocks, least recently freed first; O(1) to take from the front or to pull out a prefix hit
        # (a deque's remove() scanned all ~300k free blocks of a big cache for every hit block)
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.num_blocks = num_blocks

    @property
    def num_free(self) -> int:
        return len(self.free)

    def _take_free(self, block: int | None = None) -> int:
        if block is None:
            block, _ = self.free.popitem(last=False)
            if self.block_hash[block] is not None and self.cached.get(self.block_hash[block]) == block:
                del self.cached[self.block_hash[block]]  # its old contents are about to be overwritten
            self.block_hash[block] = self.block_tokens[block] = None
        else:
            del self.free[block]
        self.ref_counts[block] = 1
        return block

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Cached blocks matching the sequence's leading full blocks (never its last token: it needs logits; none
        for a sequence that asks for prompt logprobs, which need the logits of every prompt position)."""
        hits, prev = [], 0
        if not self.prefix_caching or seq.params.prompt_logprobs is not None:
            return hits
        for i in range((seq.num_tokens - 1) // self.block_size):
            tokens = seq.token_ids[i * self.block_size:(i + 1) * self.block_size]
            prev = _chain_hash(prev, tokens)
            block = self.cached.get(prev)
            if block is None or self.block_tokens[block] != tuple(tokens):
                break
            hits.append(block)
        return hits

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether blocks for all of ``seq``'s current tokens can be found now."""
        hits = self._prefix_hits(seq)
        reused_free = sum(self.ref_counts[b] == 0 for b in hits)
        return self.blocks_needed(seq.num_tokens) - len(hits) + reused_free <= self.num_free

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` blocks for its current tokens, sharing cached prefix blocks; sets num_computed_tokens."""
        hits = self._prefix_hits(seq)
        for block in hits:
            if self.ref_counts[block] == 0:
                self._take_free(block)
            else:
                self.ref_counts[block] += 1
        seq.block_table = hits + [self._take_free() for _ in range(self.blocks_needed(seq.num_tokens) - len(hits))]
        seq.num_computed_tokens = len(hits) * self.block_size

    def can_append(self, seq: Sequence) -> bool:
        """Whether the sequence's next token has a slot (in its last block, or one free block)."""
        return len(seq.block_table) * self.block_size >= seq.num_tokens or self.num_free > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for all of the sequence's tokens (one new block at most per decode step)."""
        while len(seq.block_table) * self.block_size < seq.num_tokens:
            seq.block_table.append(self._take_free())

    def mark_computed(self, seq: Sequence) -> None:
        """Register the sequence's newly completed full blocks in the prefix cache (incrementally: their
        chained hashes are kept on the sequence)."""
        if not self.prefix_caching:
            return
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // self.block_size):
            tokens = seq.token_ids[i * self.block_size:(i + 1) * self.block_size]
            h = _chain_hash(seq.block_hashes[-1] if seq.block_hashes else 0, tokens)
            seq.block_hashes.append(h)
            block = seq.block_table[i]
            if self.block_hash[block] is None:
                self.block_hash[block], self.block_tokens[block] = h, tuple(tokens)
                self.cached.setdefault(h, block)

    def release(self, seq: Sequence) -> None:
        """Drop the sequence's references; blocks nobody uses become free (keeping their cached contents)."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free[block] = None
        seq.block_table = []
        seq.num_computed_tokens = 0
