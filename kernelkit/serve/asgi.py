"""Pure ASGI middleware of the server: the API key and the request-body limit.

Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware hands the endpoint a
receive channel of its own, on which a client's disconnect never arrives, so a non-streaming request could
not notice that its client had gone (it kept generating, holding its queue slot).
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernelkit.serve.protocol import error_body

DEFAULT_MAX_REQUEST_BYTES = 4 << 20  # 4 MiB: about a million tokens of text, beyond any context served here


class ApiKey:
    """Answer 401 to ``/v1/`` requests without ``Authorization: Bearer <key>`` (compared in constant time),
    before their body is read."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app, self.key = app, key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").removeprefix(b"Bearer ")
            if not hmac.compare_digest(given, self.key):
                response = JSONResponse(error_body("invalid API key", code="invalid_api_key"), status_code=401)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """Answer 413 to a request whose body is larger than ``max_bytes``, before anything parses it: by its
    Content-Length when it has one, else as soon as the chunks read so far pass the limit. A body within the
    limit is read here and replayed to the application; later receives (the client's disconnect) pass
    through."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes} bytes (--max-request-bytes)"
        response = JSONResponse(error_body(message, code="request_too_large"), status_code=413)
        await response(scope, receive, send)
