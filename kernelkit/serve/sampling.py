"""Sampling parameters and the sampler.

Greedy when temperature == 0; otherwise temperature, then top-k, min-p and top-p filtering, then one draw.
Each request with a ``seed`` owns a torch.Generator and draws exactly one uniform number per token from it
(inverse-CDF sampling), and every filter works on its own row: given the same logits, a request's tokens do not
depend on which other requests share the batch. Whether the logits themselves do is the model's matter: see
``LLMEngine`` (``kernelkit.serve.engine``) for what holds on CPU and GPU.
Filters follow vLLM/HF definitions: top-p keeps the smallest set of most likely tokens whose probability
reaches p (Holtzman et al. 2019, arXiv 1904.09751); min-p keeps tokens with p >= min_p * p_max
(Nguyen et al. 2024, arXiv 2407.01082).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

INT32_MAX = 2**31 - 1
MAX_LOGPROBS = 20


@dataclass
class SamplingParams:
    """Per-request generation settings (OpenAI/vLLM names). Raises ValueError naming a bad field.

    ``max_tokens`` 0 generates nothing (useful with ``prompt_logprobs``: scoring a prompt, as OpenAI's
    ``echo``). ``prompt_logprobs`` n: each prompt token's logprob given the tokens before it, and the n most
    likely tokens at that position (the first prompt token has none). ``seed``: any integer torch accepts
    (-2**63 to 2**64 - 1)."""

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
    prompt_logprobs: int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        finite = all(math.isfinite(v) for v in (self.temperature, self.top_p, self.min_p))
        checks = [
            (finite, "temperature, top_p and min_p must be finite numbers"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (-1 <= self.top_k <= INT32_MAX, f"top_k must be -1, 0 (off) or in [1, {INT32_MAX}]"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (0 <= self.max_tokens <= INT32_MAX, f"max_tokens must be in [0, {INT32_MAX}]"),
            (self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS, f"logprobs must be in [0, {MAX_LOGPROBS}]"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS,
             f"prompt_logprobs must be in [0, {MAX_LOGPROBS}]"),
            (self.seed is None or -2**63 <= self.seed < 2**64, "seed must be in [-2**63, 2**64)"),
            (all(isinstance(t, int) and 0 <= t <= INT32_MAX for t in self.stop_token_ids),
             f"stop_token_ids must be in [0, {INT32_MAX}]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop must be non-empty strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

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
    vocab = probs.shape[-1]
    top_k = torch.tensor([min(p.top_k, vocab) if p.top_k > 0 else vocab for p in params], device=logits.device)
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


def gather_logprobs(logits: torch.Tensor, tokens: list[int], top_n: int) -> list[tuple[int, float, list]]:
    """Per row r of fp32 logits [R, V]: (tokens[r], its log-probability, the ``top_n`` most likely
    (token, logprob) pairs), log-probabilities from a log-softmax over the whole vocabulary."""
    logprobs = logits.log_softmax(-1)
    chosen = logprobs.gather(-1, torch.tensor(tokens, device=logits.device)[:, None]).squeeze(-1).tolist()
    if top_n == 0:
        return [(t, c, []) for t, c in zip(tokens, chosen, strict=True)]
    values, ids = logprobs.topk(top_n, dim=-1)
    return [(t, c, list(zip(i, v, strict=True))) for t, c, i, v in zip(tokens, chosen, ids.tolist(), values.tolist(),
                                                                       strict=True)]


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
