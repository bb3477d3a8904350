"""`kernelkit serve` as a real process on a free loopback port (tiny random model): the openai client for chat
and completions, streaming or not; bad requests get OpenAI-style 4xx; a client that disconnects mid-stream has
its request aborted and its KV blocks freed; a full queue answers 503; the API key is enforced; SIGTERM lets
an in-flight stream finish. After every misbehaving client the server still answers."""

import json
import os
import signal
import time

import httpx
import openai
import pytest
from serve_process import metric, start_server
from tiny_llama import write_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    proc, url = start_server(model, "--served-model-name", "tiny", "--max-pending", "8")
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def _client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused")


def test_openai_client_chat_and_completions(server):
    client = _client(server)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=8, temperature=0, seed=1)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1
    assert chat.choices[0].finish_reason in ("stop", "length")
    streamed = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                              max_tokens=8, temperature=0, seed=1, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    *_, usage = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                               max_tokens=8, temperature=0, seed=1, stream=True,
                                               stream_options={"include_usage": True})
    assert usage.choices == [] and usage.usage.completion_tokens == chat.usage.completion_tokens
    done = client.completions.create(model="tiny", prompt="the quick brown", max_tokens=6, temperature=0,
                                     logprobs=2)
    assert done.usage.completion_tokens == len(done.choices[0].logprobs.token_logprobs)
    streamed = client.completions.create(model="tiny", prompt="the quick brown", max_tokens=6, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text
    sampled = [client.completions.create(model="tiny", prompt="the", max_tokens=10, temperature=1.0, seed=42).choices[0]
               .text for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded sampling is reproducible


def test_batched_prompts_echo_and_scoring(server):
    """OpenAI's legacy completions as lm-evaluation-harness uses them: a list of prompts (text or token ids)
    gets one choice each; echo returns the prompt and its tokens' logprobs (the first one null); max_tokens 0
    with echo only scores the prompt."""
    client = _client(server)
    prompts = ["the quick brown", "hello world"]
    out = client.completions.create(model="tiny", prompt=prompts, max_tokens=3, temperature=0, echo=True,
                                    logprobs=1, extra_body={"ignore_eos": True})
    assert [c.index for c in out.choices] == [0, 1]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=3, temperature=0, logprobs=1,
                                       extra_body={"ignore_eos": True}) for p in prompts]
    for choice, prompt, single in zip(out.choices, prompts, alone, strict=True):
        assert choice.text == prompt + single.choices[0].text
        lp = choice.logprobs
        n_prompt = len(lp.tokens) - 3
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert all(isinstance(v, float) and v <= 0 for v in lp.token_logprobs[1:])
        assert lp.token_logprobs[n_prompt:] == pytest.approx(single.choices[0].logprobs.token_logprobs, abs=1e-5)
        assert all(len(top) == 1 for top in lp.top_logprobs[1:])
    assert out.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert out.usage.completion_tokens == 6
    scored = client.completions.create(model="tiny", prompt=[[0, 5, 6, 7], [0, 9]], max_tokens=0, echo=True,
                                       logprobs=0)
    assert [len(c.logprobs.token_logprobs) for c in scored.choices] == [4, 2]
    assert all(c.finish_reason == "length" for c in scored.choices) and scored.usage.completion_tokens == 0
    ids = client.completions.create(model="tiny", prompt=[0, 5, 6, 7], max_tokens=2, temperature=0)
    assert len(ids.choices) == 1 and ids.usage.prompt_tokens == 4
    streamed = list(client.completions.create(model="tiny", prompt=prompts, max_tokens=3, temperature=0,
                                              echo=True, stream=True, extra_body={"ignore_eos": True}))
    for i, choice in enumerate(out.choices):
        assert "".join(c.choices[0].text for c in streamed if c.choices[0].index == i) == choice.text


@pytest.mark.parametrize("body, status, code", [
    ({"model": "other", "prompt": "x"}, 404, "model_not_found"),
    ({"model": "tiny", "prompt": "x", "max_tokens": -3}, 400, None),
    ({"model": "tiny", "prompt": "x", "top_p": 1.5}, 400, None),
    ({"model": "tiny", "prompt": "x", "temperature": -1}, 400, None),
    ({"model": "tiny", "prompt": "x", "n": 3}, 400, None),
    ({"model": "tiny", "prompt": [1, 2, 99999]}, 400, None),
    ({"model": "tiny"}, 400, None),
    ({"model": "tiny", "prompt": "the " * 2000, "max_tokens": 10}, 400, "context_length_exceeded"),
])
def test_bad_requests_get_openai_errors(server, body, status, code):
    r = httpx.post(f"{server}/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] and error["code"] == code
    assert httpx.post(f"{server}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert httpx.post(f"{server}/v1/chat/completions", json={"model": "tiny", "messages": []}).status_code == 400
    assert httpx.get(f"{server}/health").status_code == 200


def test_disconnect_mid_stream_aborts_and_frees_blocks(server):
    body = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{server}/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert metric(server, "kernelkit:num_requests_running") == 1
    for _ in range(100):
        if metric(server, "kernelkit:num_requests_running") == 0 and \
                metric(server, "kernelkit:kv_cache_usage_ratio") == 0:
            break
        time.sleep(0.1)
    assert metric(server, "kernelkit:num_requests_running") == 0
    assert metric(server, "kernelkit:kv_cache_usage_ratio") == 0
    assert _client(server).completions.create(model="tiny", prompt="the", max_tokens=2).usage.completion_tokens == 2


def test_queue_full_api_key_and_sigterm_drain(tmp_path):
    model = write_tiny_model(tmp_path / "tiny")
    proc, url = start_server(model, "--max-pending", "1", "--api-key", "s3cret")
    try:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        name = httpx.get(f"{url}/v1/models", headers=auth).json()["data"][0]["id"]
        body = {"model": name, "prompt": "the quick", "max_tokens": 300, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=60) as client, client.stream("POST", f"{url}/v1/completions", json=body,
                                                               headers=auth) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            busy = httpx.post(f"{url}/v1/completions", json=body | {"stream": False}, headers=auth)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
            proc.send_signal(signal.SIGTERM)  # drain: the running stream must still complete
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in rest[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(timeout=60) == 0  # a drained shutdown is a clean exit, not a death by SIGTERM
        assert "Application shutdown complete" in proc.output()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_server_binds_loopback_by_default():
    from kernelkit.cli.serve import serve_cmd

    host = next(p for p in serve_cmd.params if p.name == "host")
    assert host.default == "127.0.0.1" and os.environ.get("KERNELKIT_API_KEY") is None
