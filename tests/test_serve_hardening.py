"""The server against hostile or unlucky clients, each case as a new user met it (a real server process on
loopback with a tiny random model): out-of-range numbers, invalid Unicode and bodies, unsupported OpenAI
fields, clients that hang up before or after the first token, a huge prompt while others probe /health, a
body over the limit, steps that fail (once, or for good), and shutdown with requests still running."""

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_process import POISON, metric, serving
from tiny_llama import write_tiny_model

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def running(model):
    with serving(model, "--served-model-name", "tiny", "--max-pending", "4") as (proc, url):
        yield proc, url


@pytest.fixture(scope="module")
def server(running):
    return running[1]


def _raw(url: str, body: bytes, path: str = "/v1/completions") -> httpx.Response:
    return httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=30)


@pytest.mark.parametrize("body, param", [
    ({"top_k": 9223372036854775808}, "top_k"),  # once killed the engine thread for good
    ({"seed": 2**64}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"stop_token_ids": [2**63]}, "stop_token_ids"),
    ({"max_tokens": 2**40}, "max_tokens"),
    ({"temperature": float("nan")}, "temperature"),
    ({"best_of": 3}, "best_of"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"suffix": "x"}, "suffix"),
    ({"max_tokens": 0}, None),  # only with echo
])
def test_out_of_range_and_unsupported_fields_are_400s(server, body, param):
    r = _raw(server, json.dumps({"model": "tiny", "prompt": "the", **body}).encode())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and (error["param"] or "").split(".")[0] == (param or "")
    assert "internal" not in error["message"]


@pytest.mark.parametrize("field, value", [("tools", [{"type": "function", "function": {"name": "f"}}]),
                                          ("response_format", {"type": "json_object"}),
                                          ("tool_choice", "required")])
def test_chat_fields_that_would_change_results_are_refused(server, field, value):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], field: value}
    r = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_invalid_unicode_and_bodies_get_openai_errors(server):
    surrogate = b'{"model": "tiny", "prompt": "a\\ud800b"}'  # valid JSON, not valid Unicode
    r = _raw(server, surrogate)
    assert r.status_code == 400 and "Unicode" in r.json()["error"]["message"]
    chat = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udfff"}]}'
    assert _raw(server, chat, "/v1/chat/completions").status_code == 400
    r = _raw(server, b'{"model": "tiny", "prompt": "\xff\xfe"}')  # not UTF-8
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    for r in (httpx.get(f"{server}/v1/nothing"), httpx.get(f"{server}/v1/completions")):
        assert r.status_code in (404, 405) and set(r.json()) == {"error"} and r.json()["error"]["message"]
    assert httpx.head(f"{server}/health").status_code == 200  # load balancers probe with HEAD
    ok = httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": "the", "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_non_streaming_client_that_leaves_is_aborted(server):
    """`curl -m 1` on a long completion: the request must stop at once, give its slot back and not run on."""
    body = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": 450, "ignore_eos": True}
    before = metric(server, "kernelkit:generation_tokens_total")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/v1/completions", json=body, timeout=0.5)
    assert _wait_for(lambda: metric(server, "kernelkit:num_requests_running") == 0, timeout=3)
    stopped = metric(server, "kernelkit:generation_tokens_total")
    time.sleep(0.5)
    assert metric(server, "kernelkit:generation_tokens_total") == stopped < before + 400
    assert metric(server, "kernelkit:kv_cache_usage_ratio") == 0
    # all four --max-pending slots are free again
    done = [httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": "the", "max_tokens": 2})
            for _ in range(4)]
    assert [r.status_code for r in done] == [200] * 4


def test_health_answers_while_a_huge_prompt_is_tokenized(running):
    """A prompt just under the 4 MiB body limit takes seconds to tokenize; /health must keep answering within
    100 ms meanwhile, and the server must not keep the memory (it grew by 1.2 GB for good on a 10 MB prompt)."""
    proc, server = running
    prompt = ("the quick brown fox jumps over the lazy dog " * 100_000)[: (4 << 20) - 100]
    result = {}
    sender = threading.Thread(target=lambda: result.update(r=httpx.post(
        f"{server}/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 1}, timeout=120)))
    rss_before = _rss(proc.pid)
    sender.start()
    latencies = []
    with httpx.Client(timeout=5) as probe:  # one client: httpx.get() builds an SSL context per call (~30 ms)
        while sender.is_alive():
            t0 = time.perf_counter()
            assert probe.get(f"{server}/health").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
    sender.join()
    r = result["r"]
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert len(latencies) >= 10, latencies  # the tokenization really was in progress for a while
    assert max(latencies) < 0.1, sorted(latencies)[-5:]
    assert _rss(proc.pid) - rss_before < 150 << 20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def test_body_over_the_limit_is_413_before_parsing(model):
    with serving(model, "--max-request-bytes", "1000") as (_, url):
        big = json.dumps({"model": "x", "prompt": "a" * 2000}).encode()
        r = _raw(url, big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunked():  # no Content-Length: counted as it arrives
            yield big[:500]
            yield big[500:]

        r = httpx.post(f"{url}/v1/completions", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert httpx.get(f"{url}/health").status_code == 200


def test_a_failing_step_fails_its_request_and_the_server_goes_on(model):
    with serving(model, fault="ValueError('kernel failed on these inputs')") as (_, url):
        poison = {"model": Path(model).name, "prompt": POISON, "max_tokens": 4}
        r = httpx.post(f"{url}/v1/completions", json=poison, timeout=30)
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_error", r.text
        stream = httpx.post(f"{url}/v1/completions", json=poison | {"stream": True}, timeout=30)
        assert stream.status_code == 500 and stream.json()["error"]["code"] == "engine_error"  # before any token
        assert httpx.get(f"{url}/health").status_code == 200
        ok = httpx.post(f"{url}/v1/completions", json=poison | {"prompt": "the quick"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4


def test_an_engine_that_cannot_go_on_reports_it_and_exits_nonzero(model):
    with serving(model, fault="RuntimeError('CUDA error: an illegal memory access was encountered')") as (proc, url):
        name = Path(model).name
        r = httpx.post(f"{url}/v1/completions", json={"model": name, "prompt": POISON, "max_tokens": 4}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead", r.text
        assert proc.wait(timeout=30) == 1
        assert "the engine stopped" in proc.output()


def test_sigterm_drains_within_the_shutdown_timeout_and_exits_0(model):
    with serving(model, "--shutdown-timeout", "1", "--max-num-seqs", "1") as (proc, url):
        _drain_with_requests_running(proc, url, Path(model).name)


def _drain_with_requests_running(proc, url, name):
    body = {"model": name, "prompt": "the quick", "max_tokens": 450, "ignore_eos": True}
    results = []
    clients = [threading.Thread(target=lambda: results.append(_post_or_error(url, body))) for _ in range(3)]
    for c in clients:
        c.start()
    assert _wait_for(lambda: metric(url, "kernelkit:num_requests_running") == 1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    # 1 s of drain (in-flight requests go on), then the rest are aborted: 3 x 450 tokens take ~5 s
    assert 0.8 < time.monotonic() - t0 < 5
    for c in clients:
        c.join(timeout=10)
    # a request may finish during the drain; the others are cancelled (uvicorn answers them with a 500)
    assert len(results) == 3 and results.count(200) < 3 and set(results) <= {200, 500, "error"}, results


def _post_or_error(url, body):
    try:
        return httpx.post(f"{url}/v1/completions", json=body, timeout=60).status_code
    except httpx.HTTPError:
        return "error"
