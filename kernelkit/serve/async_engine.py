"""The engine on its own thread, for the HTTP server: asyncio handlers submit requests and read their outputs
from per-request queues; the engine thread steps while there is work and sleeps otherwise.

The engine itself is single-threaded: every call into it happens on the engine thread (commands arrive through
a queue), so no locks are needed around scheduler or block state.

Failures: a step that raises fails the requests it was running (they get an ``EngineError``, the server a 500)
and the engine goes on. A failure the engine cannot go on from (a CUDA error, which leaves the context
unusable, ``MAX_CONSECUTIVE_FAILURES`` failing steps in a row, or an error outside a step) marks it dead: every
pending and later request gets ``EngineDead``, and ``on_dead`` is called once (the server then reports 503 on
/health and exits non-zero).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

import torch

from kernelkit.serve.engine import LLMEngine, RequestOutput
from kernelkit.serve.metrics import Metrics
from kernelkit.serve.sampling import SamplingParams

log = logging.getLogger("kernelkit.serve")

MAX_CONSECUTIVE_FAILURES = 3


class QueueFull(RuntimeError):
    """More requests in flight than ``max_pending``."""


class EngineError(RuntimeError):
    """The engine failed while running this request; the request was aborted."""


class EngineDead(RuntimeError):
    """The engine cannot go on; no request will be served."""


def _fatal(e: BaseException) -> bool:
    """Errors after which no later step can be trusted: CUDA errors poison the context, and anything that is
    not an ``Exception`` (KeyboardInterrupt, SystemExit) is not a request's fault."""
    accelerator_error = getattr(torch, "AcceleratorError", ())
    return not isinstance(e, Exception) or isinstance(e, accelerator_error) or "CUDA error" in str(e)


class AsyncEngine:
    def __init__(self, engine: LLMEngine, max_pending: int = 256, metrics: Metrics | None = None,
                 on_dead: Callable[[str], None] | None = None):
        self.engine, self.max_pending = engine, max_pending
        self.metrics = metrics or Metrics()
        self.on_dead = on_dead
        self.dead: str | None = None  # why the engine stopped for good
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue, float]] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="kernelkit-engine", daemon=True)
        self._thread.start()

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def new_request_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    async def generate(self, request_id: str, prompt_ids: list[int], params: SamplingParams
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as the engine produces them. Leaving the iterator early (a client that
        disconnects, a cancelled task) aborts the request and frees its KV blocks at once.

        Raises:
            QueueFull: ``max_pending`` requests are in flight already.
            EngineDead: the engine has stopped for good (also raised mid-request).
            EngineError: a step running this request failed.
            RequestError: the engine refused the request.
        """
        if self.dead is not None:
            raise EngineDead(self.dead)
        if len(self._streams) >= self.max_pending:
            raise QueueFull(f"{len(self._streams)} requests in flight; try again later")
        out_queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), out_queue, time.monotonic())
        self._commands.put(("add", request_id, prompt_ids, params))
        finished = False
        try:
            while not finished:
                out = await out_queue.get()
                if isinstance(out, Exception):  # refused, failed, or the engine died
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

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # the loop itself broke: nothing can be served any more
            log.exception("the engine loop failed")
            self._die(f"the engine loop failed: {type(e).__name__}: {e}")

    def _loop(self) -> None:
        while not self._stop.is_set() and self.dead is None:
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
                self._step()
            self.metrics.observe_engine(self.engine)

    def _step(self) -> None:
        try:
            outs = self.engine.step()
        except BaseException as e:
            self._step_failed(e)
            return
        self._failures = 0
        self._deliver(outs)

    def _step_failed(self, e: BaseException) -> None:
        """Abort the failed step's requests and tell their clients; die if the engine cannot go on."""
        self._failures += 1
        ids = list(self.engine.last_step_request_ids)
        log.error("engine step failed (%d in a row) running %s", self._failures, ids, exc_info=e)
        if _fatal(e) or self._failures >= MAX_CONSECUTIVE_FAILURES:
            self._die(f"engine step failed: {type(e).__name__}: {e}")
            return
        error = EngineError(f"the engine failed while running this request ({type(e).__name__}: {e}); it was "
                            "aborted")
        for request_id in ids:
            self.engine.abort(request_id)
            self.metrics.forget(request_id)
            self._send(request_id, error)

    def _die(self, reason: str) -> None:
        self.dead = reason
        if self.on_dead is not None:  # before the clients hear of it: their handlers may be the last thing running
            self.on_dead(reason)
        for request_id in list(self._streams):
            self._send(request_id, EngineDead(reason))

    def _send(self, request_id: str, item) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream[0].call_soon_threadsafe(stream[1].put_nowait, item)

    def _apply(self, command) -> None:
        if command[0] == "add":
            _, request_id, prompt_ids, params = command
            if request_id not in self._streams:  # the client is already gone
                return
            try:
                self.engine.add_request(request_id, prompt_ids, params)
            except ValueError as e:
                self._send(request_id, e)
                return
            self.metrics.prompt_tokens.inc(len(prompt_ids))
        elif command[0] == "abort":  # on the engine thread, after any output of it was observed
            self.engine.abort(command[1])
            self.metrics.forget(command[1])

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
