"""The engine on its own thread, for the HTTP server: asyncio handlers submit requests and read their outputs
from per-request queues; the engine thread steps while there is work and sleeps otherwise.

The engine itself is single-threaded: every call into it happens on the engine thread (commands arrive through
a queue), so no locks are needed around scheduler or block state.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator

from kernelkit.serve.engine import LLMEngine, RequestOutput
from kernelkit.serve.metrics import Metrics
from kernelkit.serve.sampling import SamplingParams


class QueueFull(RuntimeError):
    """More requests in flight than ``max_pending``."""


class AsyncEngine:
    def __init__(self, engine: LLMEngine, max_pending: int = 256, metrics: Metrics | None = None):
        self.engine, self.max_pending = engine, max_pending
        self.metrics = metrics or Metrics()
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue, float]] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kernelkit-engine", daemon=True)
        self._thread.start()

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def new_request_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as the engine produces them. Leaving the iterator early (a client that
        disconnects) aborts the request and frees its KV blocks at once.

        Raises:
            QueueFull: ``max_pending`` requests are in flight already.
        """
        if len(self._streams) >= self.max_pending:
            raise QueueFull(f"{len(self._streams)} requests in flight; try again later")
        out_queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), out_queue, time.monotonic())
        self._commands.put(("add", request_id, prompt_ids, params))
        finished = False
        try:
            while not finished:
                out = await out_queue.get()
                if isinstance(out, Exception):  # the engine refused the request
                    finished = True
                    raise out
                finished = out.finished
                yield out
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._commands.put(("abort", request_id))

    def shutdown(self) -> None:
        self._stop.set()
        self._commands.put(("noop",))
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                command = self._commands.get(timeout=None if not self.engine.has_unfinished() else 0)
            except queue.Empty:
                command = None
            while command is not None:
                self._apply(command)
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    command = None
            if self.engine.has_unfinished():
                self._deliver(self.engine.step())
            self.metrics.observe_engine(self.engine)

    def _apply(self, command) -> None:
        if command[0] == "add":
            _, request_id, prompt_ids, params = command
            stream = self._streams.get(request_id)
            if stream is None:  # the client is already gone
                return
            try:
                self.engine.add_request(request_id, prompt_ids, params)
            except ValueError as e:
                stream[0].call_soon_threadsafe(stream[1].put_nowait, e)
                return
            self.metrics.prompt_tokens.inc(len(prompt_ids))
        elif command[0] == "abort":
            self.engine.abort(command[1])

    def _deliver(self, outs: list[RequestOutput]) -> None:
        """Hand one step's outputs to their event loops: one wake-up per loop per step, not one per token."""
        batches: dict[asyncio.AbstractEventLoop, list] = {}
        for out in outs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            loop, out_queue, started = stream
            self.metrics.observe_output(out, started)
            batches.setdefault(loop, []).append((out_queue, out))
        for loop, items in batches.items():
            loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[asyncio.Queue, RequestOutput]]) -> None:
    for out_queue, out in items:
        out_queue.put_nowait(out)
