"""Prompt tokenization off the server's event loop.

Measured here (tokenizers 0.23, transformers 5, two cores): ``encode`` releases the GIL while it works but
holds it while it hands back the result, so a 4 MiB prompt (860k tokens) stalled every other thread of the
process for 0.23-0.3 s at the end of its 5 s encode. Texts up to ``INLINE_BYTES`` (about 16k tokens; such
stalls stay near a millisecond) are therefore encoded on a worker thread, and longer ones in a tokenizer
process of their own (spawned at start-up), which returns only the token count for a prompt longer than the
caller's limit: a huge prompt then costs the server neither its event loop nor its memory.

The process is a ``multiprocessing.Pool`` of one: it is restarted if it dies (a prompt that exhausts its
memory fails alone), and ``close`` terminates it at once, even while it is still loading the tokenizer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.pool

INLINE_BYTES = 64 << 10

_worker_tokenizer = None


def _load_in_worker(path: str) -> None:
    global _worker_tokenizer
    from transformers import AutoTokenizer

    _worker_tokenizer = AutoTokenizer.from_pretrained(path)


def _encode_in_worker(text: str, limit: int) -> list[int] | int:
    ids = _worker_tokenizer.encode(text)
    return ids if len(ids) <= limit else len(ids)


class PromptTokenizer:
    """``await encode(text, limit)`` -> token ids, or the token count alone when it exceeds ``limit``.

    Args:
        tokenizer: the engine's HF tokenizer (used on threads for short texts).
        path: where the tokenizer process loads the same tokenizer from (the model directory).
    """

    def __init__(self, tokenizer, path: str):
        self.tokenizer, self.path = tokenizer, path
        self._pool: multiprocessing.pool.Pool | None = None

    def start(self) -> None:
        """Spawn the tokenizer process, which loads the tokenizer now, not on the first long prompt."""
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(1, _load_in_worker, (self.path,))

    async def encode(self, text: str, limit: int) -> list[int] | int:
        if len(text) <= INLINE_BYTES // 4 or len(text.encode()) <= INLINE_BYTES:
            ids = await asyncio.to_thread(self.tokenizer.encode, text)
            return ids if len(ids) <= limit else len(ids)
        self.start()
        loop, done = asyncio.get_running_loop(), asyncio.get_running_loop().create_future()

        def settle(setter, value):
            if not done.cancelled():
                setter(value)

        self._pool.apply_async(_encode_in_worker, (text, limit),
                               callback=lambda ids: loop.call_soon_threadsafe(settle, done.set_result, ids),
                               error_callback=lambda e: loop.call_soon_threadsafe(settle, done.set_exception, e))
        return await done

    async def render_chat(self, messages: list[dict]) -> str:
        """The chat template applied (with the generation prompt), on a thread. Raises what the template raises."""
        return await asyncio.to_thread(self.tokenizer.apply_chat_template, messages, add_generation_prompt=True,
                                       tokenize=False)

    def close(self) -> None:
        """Stop the tokenizer process now (a prompt it is working on is dropped)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
