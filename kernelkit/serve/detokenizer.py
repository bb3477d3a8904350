"""Incremental detokenization with the model's own tokenizer, and stop strings.

Decoding token by token is wrong for byte-level and SentencePiece tokenizers (a character can span tokens,
spaces attach to the next token), so each step decodes a short window of recent tokens and emits only the text
past what the previous window produced; a window ending in an incomplete UTF-8 sequence (U+FFFD) waits for
more tokens. Same method as HF text-generation-inference and vLLM.
"""

from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int], stop: list[str], skip_special_tokens: bool = True):
        self.tokenizer, self.stop, self.skip = tokenizer, stop, skip_special_tokens
        self.ids = list(prompt_ids[-6:])
        self.prefix_offset = max(len(self.ids) - 5, 0)
        self.read_offset = len(self.ids)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def add(self, token_id: int) -> tuple[str, bool]:
        """Feed one generated token; returns (new text, whether a stop string was hit). On a hit the text is
        cut before the stop string."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return "", False
        delta = full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        self.text += delta
        for s in self.stop:
            hit = self.text.find(s, start)
            if hit >= 0:
                emitted = len(self.text) - len(delta)
                self.text = self.text[:hit]
                return self.text[emitted:], True
        return delta, False
