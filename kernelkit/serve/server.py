"""The OpenAI-compatible HTTP API (FastAPI): /v1/completions, /v1/chat/completions (streaming as server-sent
events ending in ``data: [DONE]``), /v1/models, /health and /metrics (Prometheus).

A bad request (malformed body, unknown model, invalid parameter, prompt longer than the context) gets a 4xx
with an OpenAI error object before anything reaches the engine; a full queue gets a 503. A client that goes
away mid-request has its request aborted, which frees its KV blocks. The optional API key is compared in
constant time. Shutting down (SIGTERM) lets in-flight requests finish first (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from kernelkit.serve.async_engine import AsyncEngine, QueueFull
from kernelkit.serve.engine import RequestError, RequestOutput
from kernelkit.serve.protocol import ChatCompletionRequest, CompletionRequest, error_body

DEFAULT_MAX_TOKENS = 16


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


def create_app(engine: AsyncEngine, served_model_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI application over a running AsyncEngine."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()

    app = FastAPI(title="kernelkit", lifespan=lifespan)
    tokenizer = engine.engine.tokenizer

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("the request body is not valid JSON"), status_code=400)
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param),
                            status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(given, api_key.encode()):
                return JSONResponse(error_body("invalid API key", code="invalid_api_key"), status_code=401)
        return await call_next(request)

    def check_model(name: str) -> None:
        if name != served_model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {served_model_name!r}",
                           param="model", code="model_not_found")

    def prepare(prompt: str | list[int], req, logprobs: int | None, default_max_tokens) -> tuple[list, object]:
        """(prompt ids, SamplingParams), or a 400 naming the problem; ``default_max_tokens(n_prompt)``."""
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        try:
            params = req.sampling_params(default_max_tokens(len(ids)), logprobs)
            return engine.engine.validate(ids, params), params
        except RequestError as e:
            code = "context_length_exceeded" if "exceeds" in str(e) or "do not fit" in str(e) else None
            raise ApiError(400, str(e), param="prompt", code=code) from e
        except ValueError as e:
            raise ApiError(400, str(e)) from e

    async def outputs(request_id, ids, params, request: Request, streaming: bool) -> AsyncIterator[RequestOutput]:
        """The engine's outputs; a non-streaming request also stops (and aborts) when its client leaves."""
        try:
            async for out in engine.generate(request_id, ids, params):
                yield out
                if not streaming and await request.is_disconnected():
                    return
        except QueueFull as e:
            raise ApiError(503, str(e), "server_error", code="overloaded") from e

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(engine.metrics.registry).decode())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": 0,
                                            "owned_by": "kernelkit"}]}

    async def respond(req, request: Request, prompt, logprobs, default_max_tokens, kind: str, chunk, final,
                      preamble=None):
        """Run one request; stream SSE chunks (``chunk(base, out)``) or return the final body (``final(out)``)."""
        ids, params = prepare(prompt, req, logprobs, default_max_tokens)
        request_id = engine.new_request_id("chatcmpl" if kind == "chat.completion" else "cmpl")
        base = {"id": request_id, "object": kind, "created": int(time.time()), "model": served_model_name}
        stream = outputs(request_id, ids, params, request, req.stream)
        if not req.stream:
            last = await _last(stream)
            return base | {"choices": [final(last)], "usage": _usage(last)}
        first = await _first(stream)

        async def sse():
            if preamble is not None:
                yield _sse(preamble(base))
            last = None
            async for last in _chain(first, stream):
                yield _sse(chunk(base, last))
            if req.stream_options is not None and req.stream_options.include_usage and last is not None:
                yield _sse(base | {"object": f"{kind}.chunk" if kind == "chat.completion" else kind, "choices": [],
                                   "usage": _usage(last)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        check_model(req.model)
        return await respond(
            req, request, req.prompt, req.logprobs, lambda n: DEFAULT_MAX_TOKENS, "text_completion",
            chunk=lambda base, out: base | {"choices": [{"index": 0, "text": out.delta_text, "logprobs": None,
                                                         "finish_reason": _reason(out)}]},
            final=lambda out: {"index": 0, "text": out.text, "finish_reason": _reason(out), "logprobs":
                               _completion_logprobs(out, tokenizer) if req.logprobs is not None else None})

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        check_model(req.model)
        req.max_tokens = req.max_completion_tokens or req.max_tokens
        messages = [m.model_dump() for m in req.messages]
        try:
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # a template can reject a conversation (e.g. role order)
            raise ApiError(400, f"chat template rejected the messages: {e}", param="messages") from e

        def delta(base, content, reason=None, role=None):
            body = {"content": content} | ({"role": role} if role else {})
            return base | {"object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": body, "finish_reason": reason}]}

        return await respond(
            req, request, prompt, (req.top_logprobs or 0) if req.logprobs else None,
            lambda n: max(1, engine.engine.max_model_len - n),  # OpenAI's chat default: until the context is full
            "chat.completion", chunk=lambda base, out: delta(base, out.delta_text, _reason(out)),
            final=lambda out: {"index": 0, "message": {"role": "assistant", "content": out.text},
                               "finish_reason": _reason(out),
                               "logprobs": _chat_logprobs(out, tokenizer) if req.logprobs else None},
            preamble=lambda base: delta(base, "", role="assistant"))

    return app


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _reason(out: RequestOutput) -> str | None:
    return None if not out.finished else ("length" if out.finish_reason == "length" else "stop")


def _usage(out: RequestOutput) -> dict:
    prompt, completion = len(out.prompt_token_ids), len(out.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _first(stream: AsyncIterator[RequestOutput]) -> RequestOutput | None:
    """The first output, awaited before the response starts, so refusals (503) become HTTP statuses."""
    return await anext(stream, None)


async def _chain(first, stream):
    if first is not None:
        yield first
        async for out in stream:
            yield out


async def _last(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    last = None
    async for out in stream:
        last = out
    if last is None or not last.finished:
        raise ApiError(499, "client closed the request", code="client_closed")
    return last


def _completion_logprobs(out: RequestOutput, tokenizer) -> dict:
    tokens = [tokenizer.decode([t]) for t, _, _ in out.logprobs]
    offsets = [sum(len(x) for x in tokens[:i]) for i in range(len(tokens))]
    return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in out.logprobs],
            "top_logprobs": [{tokenizer.decode([t]): v for t, v in top} for _, _, top in out.logprobs],
            "text_offset": offsets}


def _chat_logprobs(out: RequestOutput, tokenizer) -> dict:
    def entry(token, logprob):
        text = tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [entry(t, lp) | {"top_logprobs": [entry(tt, v) for tt, v in top]}
                        for t, lp, top in out.logprobs]}


def serve(llm_engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          served_model_name: str | None = None, max_pending: int = 256) -> None:
    """Serve a loaded ``LLMEngine`` with uvicorn until SIGINT/SIGTERM (which drains in-flight requests)."""
    import uvicorn

    engine = AsyncEngine(llm_engine, max_pending)
    name = served_model_name or llm_engine.config.model.rstrip("/").rsplit("/", 1)[-1]
    uvicorn.run(create_app(engine, name, api_key), host=host, port=port, timeout_graceful_shutdown=None,
                log_level="info")
