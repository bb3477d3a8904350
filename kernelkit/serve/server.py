"""The OpenAI-compatible HTTP API (FastAPI): /v1/completions, /v1/chat/completions (streaming as server-sent
events ending in ``data: [DONE]``), /v1/models, /health (GET and HEAD) and /metrics (Prometheus).

- A bad request (malformed or oversized body, unknown model, invalid or unsupported parameter, prompt longer
  than the context) gets a 4xx with an OpenAI error object before anything reaches the engine; a full queue
  gets a 503; every error, FastAPI's own included, has OpenAI's shape.
- Prompts are tokenized off the event loop (:mod:`prompt_tokenizer`), so /health answers while a long prompt
  is being tokenized.
- A client that goes away has its requests aborted at once, streaming or not, before its first token too:
  each request races its client's disconnect.
- A step that fails answers its requests with a 500; an engine that cannot go on turns /health into a 503
  and stops the server (``serve`` then returns 1).
- Shutting down (SIGTERM, SIGINT) drains in-flight requests for at most ``shutdown_timeout`` seconds, then
  aborts what is left; ``serve`` returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from kernelkit.serve import openai_format as fmt
from kernelkit.serve.asgi import DEFAULT_MAX_REQUEST_BYTES, ApiKey, BodyLimit
from kernelkit.serve.async_engine import AsyncEngine, EngineDead, EngineError, QueueFull
from kernelkit.serve.engine import RequestError, RequestOutput
from kernelkit.serve.prompt_tokenizer import PromptTokenizer
from kernelkit.serve.protocol import ChatCompletionRequest, CompletionRequest, error_body

log = logging.getLogger("kernelkit.serve")

DEFAULT_MAX_TOKENS = 16
DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


def _engine_failure(e: Exception) -> ApiError:
    """The HTTP error for what ``AsyncEngine.generate`` raised."""
    if isinstance(e, QueueFull):
        return ApiError(503, str(e), "server_error", code="overloaded")
    if isinstance(e, EngineDead):
        return ApiError(503, f"the engine has stopped: {e}", "server_error", code="engine_dead")
    if isinstance(e, EngineError):
        return ApiError(500, str(e), "server_error", code="engine_error")
    return ApiError(400, str(e), param="prompt")  # RequestError: the engine refused the request


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body("the request body is not valid JSON"), status_code=400)
    ctx = first.get("ctx") or {}
    loc = [str(p) for p in first.get("loc", ())[1:] if isinstance(p, int) or str(p).isidentifier()]
    param = ctx.get("param") or ".".join(loc) or None
    message = str(ctx["error"]) if first.get("type") == "value_error" and "error" in ctx else first.get("msg")
    return JSONResponse(error_body(f"{param}: {message}" if param and param not in message else message or
                                   "invalid request", param=param), status_code=400)


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable):
    """``await work``, unless the client disconnects first: then ``work`` is cancelled (its requests are
    aborted) and a 499 raised. Cancelling the caller cancels ``work`` too."""
    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is cancelling this request (shutdown timeout)
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ApiError(499, "client closed the request", code="client_closed")


async def merge(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(index, output) of several requests as they come; the first exception ends all of them (and leaving
    early aborts those still running)."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream):
        try:
            async for out in stream:
                await queue.put((i, out))
            await queue.put((i, None))
        except Exception as e:
            await queue.put((i, e))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                left -= 1
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect(stream: AsyncIterator[tuple[int, RequestOutput]], n: int) -> list[RequestOutput]:
    last: list = [None] * n
    async for i, out in stream:
        last[i] = out
    return last


def create_app(engine: AsyncEngine, served_model_name: str, api_key: str | None = None,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The FastAPI application over a running AsyncEngine."""
    tokenizer = engine.engine.tokenizer
    prompt_tokenizer = PromptTokenizer(tokenizer, engine.engine.config.model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        prompt_tokenizer.start()
        yield
        prompt_tokenizer.close()
        engine.shutdown()

    app = FastAPI(title="kernelkit", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(ApiKey, key=api_key)  # outermost: no body is read for a request without the key

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_error(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):  # unknown route, wrong method, unparsable body
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("unexpected error serving %s", request.url.path, exc_info=exc)
        return JSONResponse(error_body(f"internal error ({type(exc).__name__})", "server_error"), status_code=500)

    def check_model(name: str) -> None:
        if name != served_model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {served_model_name!r}",
                           param="model", code="model_not_found")

    async def prompt_ids(prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        ids = await prompt_tokenizer.encode(prompt, engine.engine.max_model_len)
        if isinstance(ids, int):
            raise ApiError(400, f"the prompt has {ids} tokens, more than the maximum context length "
                           f"{engine.engine.max_model_len}", param="prompt", code="context_length_exceeded")
        return ids

    def prepare(ids: list[int], req, logprobs, prompt_logprobs, default_max_tokens):
        """SamplingParams, or a 400 naming the problem; ``default_max_tokens(n_prompt)``."""
        try:
            params = req.sampling_params(default_max_tokens(len(ids)), logprobs, prompt_logprobs)
            engine.engine.validate(ids, params)
        except RequestError as e:
            code = "context_length_exceeded" if "exceeds" in str(e) or "do not fit" in str(e) else None
            raise ApiError(400, str(e), param="prompt", code=code) from e
        except ValueError as e:
            raise ApiError(400, str(e)) from e
        return params

    def start(kind: str, jobs: list[tuple[list[int], object]]) -> tuple[dict, list]:
        if engine.dead is not None:
            raise _engine_failure(EngineDead(engine.dead))
        if engine.num_in_flight + len(jobs) > engine.max_pending:
            raise _engine_failure(QueueFull(f"{engine.num_in_flight} requests in flight; try again later"))
        request_id = engine.new_request_id("chatcmpl" if kind == "chat.completion" else "cmpl")
        base = {"id": request_id, "object": kind, "created": int(time.time()), "model": served_model_name}
        streams = [engine.generate(f"{request_id}-{i}", ids, params) for i, (ids, params) in enumerate(jobs)]
        return base, streams

    async def respond(req, request: Request, kind: str, jobs, choice, chunk, preamble=None):
        """Run the jobs; stream SSE chunks (``chunk(base, index, out)``) or return the final body."""
        base, streams = start(kind, jobs)
        merged = merge(streams)
        try:
            if not req.stream:
                outs = await until_disconnected(request, _collect(merged, len(jobs)))
                choices = [await asyncio.to_thread(choice, i, out) for i, out in enumerate(outs)]
                return base | {"choices": choices, "usage": fmt.usage(outs)}
            first = await until_disconnected(request, anext(merged, None))
        except (QueueFull, EngineDead, EngineError, RequestError) as e:
            raise _engine_failure(e) from e

        async def events():
            if preamble is not None:
                for i in range(len(jobs)):
                    yield fmt.sse(preamble(base, i))
            last: dict[int, RequestOutput] = {}
            try:
                if first is not None:
                    last[first[0]] = first[1]
                    yield fmt.sse(chunk(base, *first))
                async for i, out in merged:
                    last[i] = out
                    yield fmt.sse(chunk(base, i, out))
            except (QueueFull, EngineDead, EngineError, RequestError) as e:
                yield fmt.sse(_engine_failure(e).body)
            finally:  # a client that left mid-stream: abort what still runs now, not when this is collected
                await merged.aclose()
            if req.stream_options is not None and req.stream_options.include_usage and last:
                object_ = f"{kind}.chunk" if kind == "chat.completion" else kind
                yield fmt.sse(base | {"object": object_, "choices": [], "usage": fmt.usage(list(last.values()))})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        if engine.dead is not None:
            return JSONResponse(error_body(f"the engine has stopped: {engine.dead}", "server_error",
                                           code="engine_dead"), status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import generate_latest

        return PlainTextResponse(generate_latest(engine.metrics.registry).decode())

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": 0,
                                            "owned_by": "kernelkit"}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        check_model(req.model)
        prompts = req.prompts()
        ids = await asyncio.gather(*(prompt_ids(p) for p in prompts))
        scored = req.logprobs if req.echo else None  # echo's prompt logprobs, only when logprobs are asked for
        jobs = [(i, prepare(i, req, req.logprobs, scored, lambda n: DEFAULT_MAX_TOKENS)) for i in ids]
        echoed = [p if isinstance(p, str) else tokenizer.decode(p) for p in prompts] if req.echo else [""] * len(ids)

        def logprobs(out: RequestOutput, entries: list, offset: int, with_prompt: bool) -> dict | None:
            if req.logprobs is None:
                return None
            prompt = fmt.echo_entries(out) if with_prompt else []
            return fmt.completion_logprobs(tokenizer, prompt + entries, offset)

        def choice(i: int, out: RequestOutput) -> dict:
            return {"index": i, "text": echoed[i] + out.text, "finish_reason": fmt.finish_reason(out),
                    "logprobs": logprobs(out, out.logprobs or [], 0, req.echo)}

        sent: set[int] = set()

        def chunk(base: dict, i: int, out: RequestOutput) -> dict:
            first = i not in sent
            sent.add(i)
            new = (out.logprobs or [])[len(out.token_ids) - len(out.delta_token_ids):]
            offset = (0 if first else len(echoed[i])) + len(out.text) - len(out.delta_text)
            return base | {"choices": [{"index": i, "text": (echoed[i] if first else "") + out.delta_text,
                                        "logprobs": logprobs(out, new, offset, req.echo and first),
                                        "finish_reason": fmt.finish_reason(out)}]}

        return await respond(req, request, "text_completion", jobs, choice, chunk)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        check_model(req.model)
        req.max_tokens = req.max_completion_tokens or req.max_tokens
        try:
            prompt = await prompt_tokenizer.render_chat([m.model_dump() for m in req.messages])
        except Exception as e:  # a template can reject a conversation (e.g. role order)
            raise ApiError(400, f"chat template rejected the messages: {e}", param="messages") from e
        ids = await prompt_ids(prompt)
        top = (req.top_logprobs or 0) if req.logprobs else None
        # OpenAI's chat default: until the context is full
        jobs = [(ids, prepare(ids, req, top, None, lambda n: max(1, engine.engine.max_model_len - n)))]

        def delta(base, i, content, reason=None, role=None, logprobs=None):
            body = {"content": content} | ({"role": role} if role else {})
            return base | {"object": "chat.completion.chunk",
                           "choices": [{"index": i, "delta": body, "logprobs": logprobs, "finish_reason": reason}]}

        def chunk(base, i, out):
            logprobs = None
            if req.logprobs:
                new = out.logprobs[len(out.token_ids) - len(out.delta_token_ids):]
                logprobs = fmt.chat_logprobs(tokenizer, new)
            return delta(base, i, out.delta_text, fmt.finish_reason(out), logprobs=logprobs)

        def choice(i, out):
            return {"index": i, "message": {"role": "assistant", "content": out.text},
                    "finish_reason": fmt.finish_reason(out),
                    "logprobs": fmt.chat_logprobs(tokenizer, out.logprobs) if req.logprobs else None}

        return await respond(req, request, "chat.completion", jobs, choice, chunk,
                             preamble=lambda base, i: delta(base, i, "", role="assistant"))

    return app


class _Server:
    """uvicorn's server, stopped by SIGINT/SIGTERM with a bounded drain and exit status 0 (uvicorn itself
    re-raises the signal afterwards: status 143), or by the engine's death with status 1."""

    def __init__(self, app: FastAPI, engine: AsyncEngine, host: str, port: int, shutdown_timeout: float):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=shutdown_timeout,
                                log_level="info")
        self.server = Server(config)
        engine.on_dead = self._engine_died

    def _engine_died(self, reason: str) -> None:
        log.error("the engine stopped (%s); shutting the server down", reason)
        self.server.should_exit = True


def serve(llm_engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          served_model_name: str | None = None, max_pending: int = 256,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> int:
    """Serve a loaded ``LLMEngine`` with uvicorn until SIGINT/SIGTERM (in-flight requests drain for at most
    ``shutdown_timeout`` seconds, then are aborted) or until the engine cannot go on.

    Returns:
        The process exit status: 0 after a signal, 1 if the engine died.
    """
    engine = AsyncEngine(llm_engine, max_pending)
    name = served_model_name or llm_engine.config.model.rstrip("/").rsplit("/", 1)[-1]
    server = _Server(create_app(engine, name, api_key, max_request_bytes), engine, host, port, shutdown_timeout)
    server.server.run()
    return 1 if engine.dead is not None else 0
