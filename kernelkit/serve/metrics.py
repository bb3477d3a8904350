"""Prometheus metrics of the server (prometheus_client), in its own registry: queue length, running requests,
KV-cache usage, time to first token (TTFT), time per output token (TPOT), token counters and recent output
throughput. Names follow vLLM's ``vllm:*`` metrics with a ``kernelkit:`` prefix."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.waiting = Gauge("kernelkit:num_requests_waiting", "Requests queued for admission", registry=r)
        self.running = Gauge("kernelkit:num_requests_running", "Requests in the running batch", registry=r)
        self.kv_usage = Gauge("kernelkit:kv_cache_usage_ratio", "Share of KV-cache blocks in use", registry=r)
        self.ttft = Histogram("kernelkit:time_to_first_token_seconds", "Time to first token", registry=r,
                              buckets=_LATENCY_BUCKETS)
        self.tpot = Histogram("kernelkit:time_per_output_token_seconds", "Time between output tokens",
                              registry=r, buckets=_LATENCY_BUCKETS)
        self.prompt_tokens = Counter("kernelkit:prompt_tokens", "Prompt tokens admitted", registry=r)
        self.generation_tokens = Counter("kernelkit:generation_tokens", "Tokens generated", registry=r)
        self.throughput = Gauge("kernelkit:generation_tokens_per_second", "Output tokens/s over the last 10 s",
                                registry=r)
        self.preemptions = Gauge("kernelkit:num_preemptions", "Sequences preempted since start", registry=r)
        self._last_token: dict[str, float] = {}
        self._recent: deque[float] = deque()

    def observe_output(self, out, started: float) -> None:
        now = time.monotonic()
        last = self._last_token.get(out.request_id)
        (self.ttft.observe(now - started) if last is None else self.tpot.observe(now - last))
        self._last_token[out.request_id] = now
        if out.finished:
            self._last_token.pop(out.request_id, None)
        self.generation_tokens.inc(len(out.delta_token_ids))
        self._recent.extend([now] * len(out.delta_token_ids))

    def forget(self, request_id: str) -> None:
        """Drop what is kept about a request that ended without a finished output (aborted, failed)."""
        self._last_token.pop(request_id, None)

    def observe_engine(self, engine) -> None:
        self.waiting.set(len(engine.scheduler.waiting))
        self.running.set(len(engine.scheduler.running))
        self.kv_usage.set(1 - engine.blocks.num_free / engine.blocks.num_blocks)
        self.preemptions.set(engine.scheduler.num_preemptions)
        horizon = time.monotonic() - 10
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
        self.throughput.set(len(self._recent) / 10)
