"""Online serving load generator: the official ``openai`` client against any OpenAI-compatible server.

Requests arrive as a Poisson process at each given rate (``inf``: all at once), each a streamed
``/v1/completions`` call with a random token-id prompt, ``ignore_eos`` and ``stream_options.include_usage``,
sent from several client processes so that the client's own Python does not limit what is measured.
Metrics follow sglang's ``bench_serving`` and vLLM's ``benchmark_serving`` conventions:

- TTFT: request sent to first streamed chunk, ms;
- ITL: gaps between consecutive streamed chunks of one request, ms (one chunk per decode step);
- TPOT: (end-to-end latency - TTFT) / (output tokens - 1) per request with >= 2 tokens, ms;
- E2E: request sent to last chunk, ms;
- output throughput: all output tokens (from ``usage``) / wall time of the run, tok/s; request throughput, req/s.

Run: ``python benches/serve_load.py --base-url http://127.0.0.1:8000 --model NAME --vocab-size 49152
--rates 1,4,16,inf [--workers 8]``; ``bench_serve.py::bench_online_load`` starts ``kernelkit serve`` and calls
:func:`run_load`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import multiprocessing
import random
import time
from dataclasses import dataclass, field

import click
import numpy as np


@dataclass
class RequestRecord:
    """One request's timeline, in seconds since the run started; ``error`` is set when it failed."""

    prompt_len: int
    sent: float
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None


@dataclass
class Workload:
    """Prompts (token ids), per-request ``max_tokens`` and arrival offsets in seconds."""

    prompts: list[list[int]]
    max_tokens: list[int]
    arrivals: list[float]


def make_workload(num_prompts: int, rate: float, vocab_size: int, input_len: tuple[int, int],
                  output_len: tuple[int, int], seed: int = 0) -> Workload:
    """Random prompts of ``input_len`` (inclusive range) token ids in ``[0, vocab_size)``, ``max_tokens`` in
    ``output_len`` and Poisson arrivals (exponential gaps with mean ``1/rate`` s; ``rate=inf``: all at 0).

    Raises ValueError for a non-positive rate, an empty length range or ``num_prompts < 1``.
    """
    if num_prompts < 1 or not rate > 0 or not 1 <= input_len[0] <= input_len[1] or \
            not 1 <= output_len[0] <= output_len[1]:
        raise ValueError(f"bad workload: num_prompts={num_prompts} rate={rate} input_len={input_len} "
                         f"output_len={output_len}")
    g = random.Random(seed)
    prompts = [[g.randrange(vocab_size) for _ in range(g.randint(*input_len))] for _ in range(num_prompts)]
    max_tokens = [g.randint(*output_len) for _ in range(num_prompts)]
    gaps = [0.0 if math.isinf(rate) else g.expovariate(rate) for _ in range(num_prompts)]
    return Workload(prompts, max_tokens, list(np.cumsum(gaps) - gaps[0]))


async def _one(client, model: str, prompt: list[int], max_tokens: int, start: float) -> RequestRecord:
    record = RequestRecord(len(prompt), time.time() - start)
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        async for chunk in stream:
            if chunk.choices:
                record.chunk_times.append(time.time() - start)
            if chunk.usage is not None:
                record.output_tokens = chunk.usage.completion_tokens
        if not record.chunk_times or record.output_tokens == 0:
            record.error = "stream ended without tokens or usage"
    except Exception as e:  # a failed request is counted and reported, never fatal to the run
        record.error = f"{type(e).__name__}: {e}"
    return record


async def _client_loop(base_url: str, model: str, workload: Workload, indices: list[int], api_key: str,
                       start: float) -> list[RequestRecord]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base_url.rstrip('/')}/v1", api_key=api_key, max_retries=0,
                                timeout=3600)

    async def delayed(i: int) -> RequestRecord:
        await asyncio.sleep(max(0.0, start + workload.arrivals[i] - time.time()))
        return await _one(client, model, workload.prompts[i], workload.max_tokens[i], start)

    try:
        return await asyncio.gather(*(delayed(i) for i in indices))
    finally:
        await client.close()


def _client_process(*args) -> list[RequestRecord]:
    return asyncio.run(_client_loop(*args))


def run_load(base_url: str, model: str, workload: Workload, api_key: str = "unused", workers: int = 8) -> dict:
    """Send ``workload`` to ``base_url`` (``.../v1`` is appended) and return :func:`summarize`'s metrics.

    Requests are dealt round-robin to ``workers`` client processes, each with its own event loop, so that
    parsing the streams (the ``openai`` client costs tens of µs of Python per chunk) does not throttle the
    server being measured. All share one wall-clock start, a second after the processes are launched.
    """
    ctx = multiprocessing.get_context("spawn")
    workers = max(1, min(workers, len(workload.prompts)))
    start = time.time() + 1.0 + 0.25 * workers  # every process imported and waiting by then
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parts = [pool.submit(_client_process, base_url, model, workload, list(range(w, len(workload.prompts),
                                                                                      workers)), api_key, start)
                 for w in range(workers)]
        records = [r for part in parts for r in part.result()]
    duration = max((r.chunk_times[-1] if r.chunk_times else r.sent) for r in records)
    return summarize(records, duration)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(records: list[RequestRecord], duration: float) -> dict:
    """bench_serving-style metrics of finished ``records`` over a run of ``duration`` seconds (times in ms).

    Failed requests count in ``failed`` only; a metric with no samples is NaN.
    """
    ok = [r for r in records if r.error is None]
    ttft = [1e3 * (r.chunk_times[0] - r.sent) for r in ok]
    e2e = [1e3 * (r.chunk_times[-1] - r.sent) for r in ok]
    tpot = [1e3 * (r.chunk_times[-1] - r.chunk_times[0]) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [1e3 * d for r in ok for d in np.diff(r.chunk_times)]
    out_tokens = sum(r.output_tokens for r in ok)
    metrics = {"completed": len(ok), "failed": len(records) - len(ok), "duration_s": duration,
               "input_tokens": sum(r.prompt_len for r in ok), "output_tokens": out_tokens,
               "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        metrics |= {f"{name}_mean_ms": float(np.mean(values)) if values else float("nan"),
                    f"{name}_p50_ms": _pct(values, 50), f"{name}_p99_ms": _pct(values, 99)}
    metrics["errors"] = sorted({r.error for r in records if r.error})[:5]
    return metrics


def table_row(rate: float, m: dict) -> dict:
    """One markdown-table row of a run at ``rate`` req/s."""
    return {"rate (req/s)": "inf" if math.isinf(rate) else f"{rate:g}", "completed": m["completed"],
            "failed": m["failed"], "req/s": f"{m['request_throughput']:.2f}",
            "output tok/s": f"{m['output_throughput']:.0f}",
            **{f"{k.upper()} p{q} (ms)": f"{m[f'{k}_p{q}_ms']:.1f}" for k in ("ttft", "tpot", "itl") for q in (50, 99)}}


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


@click.command()
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--model", required=True, help="model id the server serves (GET /v1/models)")
@click.option("--vocab-size", required=True, type=int, help="prompt token ids are drawn below this")
@click.option("--rates", default="1,4,16,inf", show_default=True, help="comma-separated request rates, req/s")
@click.option("--num-prompts", default=200, show_default=True, help="requests per rate")
@click.option("--input-len", default="100-1024", show_default=True, help="prompt tokens, LO-HI")
@click.option("--output-len", default="100-1024", show_default=True, help="max_tokens, LO-HI")
@click.option("--seed", default=0, show_default=True)
@click.option("--api-key", default="unused", envvar="OPENAI_API_KEY")
@click.option("--workers", default=8, show_default=True, help="client processes the requests are spread over")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="also write all metrics as JSON")
def main(base_url, model, vocab_size, rates, num_prompts, input_len, output_len, seed, api_key, workers,
         json_out) -> None:
    """Poisson-arrival load against an OpenAI-compatible server; prints a markdown table per rate."""
    results, rows = [], []
    try:  # malformed numbers, or a workload make_workload refuses
        workloads = [(rate, make_workload(num_prompts, rate, vocab_size, _range(input_len), _range(output_len), seed))
                     for rate in (float(r) for r in rates.split(","))]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for rate, workload in workloads:
        metrics = run_load(base_url, model, workload, api_key, workers)
        results.append({"rate": rate} | metrics)
        rows.append(table_row(rate, metrics))
        if metrics["errors"]:
            click.echo(f"rate {rate}: {metrics['failed']} failed, e.g. {metrics['errors'][0]}", err=True)
    cols = list(rows[0])
    click.echo("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        click.echo("| " + " | ".join(str(row[c]) for c in cols) + " |")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
