"""Incremental detokenization with the model's own tokenizer, and stop strings.

Decoding token by token is wrong for byte-level and SentencePiece tokenizers (a character can span tokens,
spaces attach to the next token). The ``tokenizers`` library's ``DecodeStream`` (tokenizers >= 0.21) handles
this in Rust: it keeps a short window of recent ids, emits only text past what it emitted before, and holds back
an incomplete UTF-8 sequence until it completes (the method of HF text-generation-inference; vLLM's fast
incremental detokenizer uses the same class). It is primed with the prompt's last tokens, so the first
generated token's leading space comes out as in a full decode. When the prompt ends inside a character, its
tokens after the last complete character come out, completed, with the first generated text.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream

PRIME_TOKENS = 6  # prompt context that decides how the first generated token is rendered


class IncrementalDetokenizer:
    """Args: tokenizer: a fast (``tokenizers``-backed) HF tokenizer; prompt_ids: the prompt; stop: stop strings.

    Raises:
        ValueError: the tokenizer has no ``tokenizers`` backend (a slow, Python-only tokenizer).
    """

    def __init__(self, tokenizer, prompt_ids: list[int], stop: list[str], skip_special_tokens: bool = True):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; the engine needs a fast one "
                             "(a tokenizer.json, or transformers' conversion of the slow one)")
        self.backend, self.stop = tokenizer.backend_tokenizer, stop
        self.stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        for token_id in prompt_ids[-PRIME_TOKENS:]:  # one by one: a prompt that ends inside a character leaves
            self.stream.step(self.backend, token_id)  # only that character pending, to come out completed
        self.text = ""

    def add(self, token_id: int) -> tuple[str, bool]:
        """Feed one generated token; returns (new text, whether a stop string was hit). On a hit the text is
        cut before the stop string."""
        delta = self.stream.step(self.backend, token_id)
        if not delta:
            return "", False
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        self.text += delta
        for s in self.stop:
            hit = self.text.find(s, start)
            if hit >= 0:
                emitted = len(self.text) - len(delta)
                self.text = self.text[:hit]
                return self.text[emitted:], True
        return delta, False
