"""Sampling parameters and the sampler.

Greedy when temperature == 0; otherwise temperature, then top-k, min-p and top-p filtering, then one draw.
Each request with a ``seed`` owns a torch.Generator and draws exactly one uniform number per token from it
(inverse-CDF sampling), so its tokens do not depend on which other requests share the batch.
Filters follow vLLM/HF definitions: top-p keeps the smallest set of most likely tokens whose probability
reaches p (Holtzman et al. 2019, arXiv 1904.09751); min-p keeps tokens with p >= min_p * p_max
(Nguyen et al. 2024, arXiv 2407.01082).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """Per-request generation settings (OpenAI/vLLM names). Raises ValueError naming a bad field."""

    temperature: float = 1.0
    top_k: int = 0  # 0 or -1: off
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None  # None: off; n >= 0: the sampled token's logprob and the n most likely

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= -1, "top_k must be -1, 0 (off) or positive"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop must be non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class SampleResult:
    """Per row: the token, its logprob, and the top-n (token, logprob) pairs when asked for."""

    tokens: list[int]
    logprobs: list[float | None]
    top_logprobs: list[list[tuple[int, float]] | None]


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Probabilities [B, V] after temperature, top-k, min-p and top-p (rows of greedy requests unused).

    A row with no filter gets the same values whether or not another row of the batch filters; when no row
    filters, the sort is skipped."""
    temps = torch.tensor([max(p.temperature, 1e-5) for p in params], device=logits.device)
    probs = (logits / temps[:, None]).softmax(-1)
    if all(p.top_k <= 0 and p.top_p >= 1 and p.min_p <= 0 for p in params):
        return probs / probs.sum(-1, keepdim=True)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(probs.shape[-1], device=logits.device)[None, :]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else probs.shape[-1] for p in params], device=logits.device)
    min_p = torch.tensor([p.min_p for p in params], device=logits.device)
    top_p = torch.tensor([p.top_p for p in params], device=logits.device)
    keep = ranks < top_k[:, None]
    keep &= sorted_probs >= min_p[:, None] * sorted_probs[:, :1]
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
    keep &= (before < top_p[:, None]) | (top_p[:, None] >= 1)  # top_p = 1 keeps all (cumsum may round past 1)
    keep[:, 0] = True
    sorted_probs = sorted_probs * keep
    filtered = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return filtered / filtered.sum(-1, keepdim=True)


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> SampleResult:
    """Sample one token per row of fp32 logits [B, V]; ``generators[i]`` drives row i."""
    greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    tokens = logits.argmax(-1)
    if not bool(greedy.all()):
        probs = _filtered_probs(logits, params)
        u = torch.tensor([torch.rand((), generator=g).item() for g in generators], device=logits.device)
        cdf = probs.cumsum(-1)
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(-1).clamp(max=logits.shape[-1] - 1)
        tokens = torch.where(greedy, tokens, drawn)
    tokens_list = tokens.tolist()
    if all(p.logprobs is None for p in params):
        return SampleResult(tokens_list, [None] * len(params), [None] * len(params))
    logprobs = logits.log_softmax(-1)
    chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()
    top = []
    for i, p in enumerate(params):
        if p.logprobs:
            values, ids = logprobs[i].topk(p.logprobs)
            top.append(list(zip(ids.tolist(), values.tolist(), strict=True)))
        else:
            top.append([] if p.logprobs == 0 else None)
    return SampleResult(tokens_list, [c if p.logprobs is not None else None for c, p in zip(chosen, params,
                                                                                          strict=True)], top)
