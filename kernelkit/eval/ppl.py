"""Perplexity of a causal LM on a fixed text, in non-overlapping windows.

The default text is Python's bundled documentation (``pydoc_data.topics``): real English prose and code that
nobody here wrote, present on every Python install.
"""

from __future__ import annotations

import math

import torch


def default_text() -> str:
    """Python's pydoc topics, concatenated in key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


@torch.no_grad()
def perplexity(model, tokenizer, text: str, context: int = 512, max_tokens: int = 4096) -> tuple[float, int]:
    """(perplexity, scored tokens): exp of the mean next-token NLL over the first ``max_tokens`` tokens of
    ``text``, split into windows of ``context`` tokens (each window predicts its own tokens 2..n).

    Raises:
        ValueError: the text has fewer than 2 tokens.
    """
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    if ids.numel() < 2:
        raise ValueError("the text is too short to score (fewer than 2 tokens)")
    device = next(model.parameters()).device
    nll, scored = 0.0, 0
    for start in range(0, ids.numel() - 1, context):
        window = ids[start:start + context].to(device)
        if window.numel() < 2:
            break
        logits = model(window[None]).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum").item()
        scored += window.numel() - 1
    return math.exp(nll / scored), scored
