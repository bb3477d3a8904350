"""Response bodies of the OpenAI API from engine outputs: choices, logprobs (with ``echo``), usage, SSE.

Definitions: OpenAI's legacy completions and chat completions objects, as vLLM's OpenAI server fills them
(``echo``: the prompt's tokens come first in ``logprobs``, the first one with ``null`` logprob and top
logprobs; a -inf logprob is written as -9999.0).
"""

from __future__ import annotations

import json

from kernelkit.serve.engine import RequestOutput
from kernelkit.serve.protocol import json_logprob


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def finish_reason(out: RequestOutput) -> str | None:
    return None if not out.finished else ("length" if out.finish_reason == "length" else "stop")


def usage(outs: list[RequestOutput]) -> dict:
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    completion = sum(len(o.token_ids) for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_logprobs(tokenizer, entries: list, offset: int = 0) -> dict:
    """OpenAI's completions ``logprobs`` for (token, logprob, top) entries; None entries (the first prompt
    token under echo) get null values. ``offset``: characters of text before the first entry."""
    tokens = [tokenizer.decode([e[0]]) for e in entries]
    offsets, at = [], offset
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {"tokens": tokens,
            "token_logprobs": [None if e[1] is None else json_logprob(e[1]) for e in entries],
            "top_logprobs": [None if e[1] is None else {tokenizer.decode([t]): json_logprob(v) for t, v in e[2]}
                             for e in entries],
            "text_offset": offsets}


def echo_entries(out: RequestOutput) -> list:
    """The prompt's (token, logprob, top) entries, the first token's logprob None (nothing precedes it)."""
    first = out.prompt_token_ids[0]
    return [(first, None, None), *(out.prompt_logprobs or [])]


def chat_logprobs(tokenizer, entries: list) -> dict:
    """OpenAI's chat ``logprobs`` for generated (token, logprob, top) entries."""
    def entry(token, logprob):
        text = tokenizer.decode([token])
        return {"token": text, "logprob": json_logprob(logprob), "bytes": list(text.encode())}

    return {"content": [entry(t, lp) | {"top_logprobs": [entry(tt, v) for tt, v in top]} for t, lp, top in entries]}
