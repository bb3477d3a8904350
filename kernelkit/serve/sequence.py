"""A request's state inside the engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from kernelkit.serve.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """Prompt and generated tokens, KV blocks, and progress.

    ``num_computed_tokens`` tokens have their K/V in the cache; the rest of ``token_ids`` is fed next (a
    prompt in one or more chunks, then one token per decode step).
    """

    request_id: str
    token_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of the computed full blocks
    status: Status = Status.WAITING
    finish_reason: str | None = None
    logprobs: list = field(default_factory=list)
    prompt_logprobs: list = field(default_factory=list)  # (token, logprob, top) of prompt tokens 1, 2, ...

    def __post_init__(self):
        self.num_prompt_tokens = self.num_prompt_tokens or len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed_tokens
