"""The request body size limit, as a pure ASGI middleware.

A ``Content-Length`` above ``max_bytes`` is answered 413 before any of the body is read; a
body without one (chunked) is counted as it streams in and answered 413 as soon as it
passes the limit (the rest is never read).
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_BODY = 100 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _framing(scope)
        if length is not None and length > self.max_bytes:
            await self._refuse(send, f"the body is {length} bytes")
            return
        if not chunked:
            # A Content-Length within the limit, or no body at all: the HTTP parser reads
            # no more than that, so there is nothing to count (and no wrapper to pay for).
            await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # too late for an answer: drop the connection
                raise
            await self._refuse(send, f"the body passed {self.max_bytes} bytes")

    async def _refuse(self, send: Any, why: str) -> None:
        body = json.dumps({"detail": f"request body too large: {why}; the limit is "
                                     f"{self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _framing(scope: dict) -> tuple[int | None, bool]:
    """The request's Content-Length (None if absent or unreadable) and whether its body
    comes chunked (or in some other way whose size is not known up front)."""
    length = None
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                chunked = True  # unreadable: count it as it comes
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked
