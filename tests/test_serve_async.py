"""The engine thread behind the server (AsyncEngine), in process on a tiny random llama: a client that leaves
is aborted and forgotten, a client that leaves before its first token is noticed at once, a failing step fails
only its requests, and repeated failures mark the engine dead; the KV cache caps max_model_len."""

import asyncio

import pytest
from tiny_llama import write_tiny_model

from kernelkit.serve import LLM, SamplingParams
from kernelkit.serve.async_engine import MAX_CONSECUTIVE_FAILURES, AsyncEngine, EngineDead, EngineError
from kernelkit.serve.config import EngineConfig
from kernelkit.serve.engine import LLMEngine

LONG = SamplingParams(temperature=0, max_tokens=300, ignore_eos=True)
SHORT = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def engine(tiny):
    engine = AsyncEngine(LLMEngine(EngineConfig(model=str(tiny), device="cpu")))
    yield engine
    engine.shutdown()


async def _drain(stream):
    return [out async for out in stream]


def test_a_client_that_leaves_is_aborted_and_forgotten(engine):
    async def leave_after_two_tokens():
        stream = engine.generate("r1", [0, 5, 6], LONG)
        assert (await anext(stream)).token_ids and (await anext(stream))
        await stream.aclose()
        for _ in range(100):
            if not engine.engine.requests:
                break
            await asyncio.sleep(0.01)

    asyncio.run(leave_after_two_tokens())
    assert engine.engine.requests == {} and engine.num_in_flight == 0
    assert engine.metrics._last_token == {}  # one entry per aborted stream once leaked here


def test_a_disconnect_before_the_first_token_cancels_the_work():
    from kernelkit.serve.server import ApiError, until_disconnected

    class Request:  # a client that hangs up 50 ms after sending its body
        async def receive(self):
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

    async def scenario():
        work = asyncio.ensure_future(asyncio.sleep(30))  # a prefill that would take 30 s
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(until_disconnected(Request(), work), timeout=2)
        return info.value.status, work.cancelled()

    assert asyncio.run(scenario()) == (499, True)


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(engine, monkeypatch):
    run = engine.engine.runner.run

    def fails_for_prompt_9(batch, *args, **kwargs):
        if any(s.token_ids[0] == 9 for s in batch.seqs):
            raise ValueError("bad inputs")
        return run(batch, *args, **kwargs)

    monkeypatch.setattr(engine.engine.runner, "run", fails_for_prompt_9)

    async def scenario():
        with pytest.raises(EngineError, match="bad inputs"):
            await _drain(engine.generate("bad", [9, 1, 2], SHORT))
        outs = await _drain(engine.generate("good", [0, 1, 2], SHORT))
        return outs[-1]

    last = asyncio.run(scenario())
    assert last.finished and len(last.token_ids) == 3 and engine.dead is None
    assert engine.engine.requests == {}


def test_repeated_step_failures_mark_the_engine_dead(engine, monkeypatch):
    died = []
    engine.on_dead = died.append
    monkeypatch.setattr(engine.engine.runner, "run", lambda *a, **k: (_ for _ in ()).throw(ValueError("broken")))

    async def scenario():
        for i in range(MAX_CONSECUTIVE_FAILURES - 1):
            with pytest.raises(EngineError):
                await _drain(engine.generate(f"r{i}", [0, 1], SHORT))
        with pytest.raises(EngineDead):
            await _drain(engine.generate("last", [0, 1], SHORT))
        with pytest.raises(EngineDead):  # and every later request, at once
            await _drain(engine.generate("later", [0, 1], SHORT))

    asyncio.run(scenario())
    assert engine.dead and died == [engine.dead]


def test_max_model_len_is_capped_to_the_kv_cache(tiny, kernelkit_logs):
    per_block = 2 * 2 * 16 * 1 * 64 * 4  # layers x (k, v) x block_size x kv_heads x head_dim x fp32
    llm = LLM(str(tiny), device="cpu", kv_cache_memory=4 * per_block)
    assert llm.engine.max_model_len == 64  # not the config's 512, which no request could reach
    assert any("max_model_len is 64" in r.message for r in kernelkit_logs.records)
    with pytest.raises(ValueError, match="max_model_len=512 does not fit the KV cache, which holds 64 tokens"):
        LLM(str(tiny), device="cpu", kv_cache_memory=4 * per_block, max_model_len=512)
