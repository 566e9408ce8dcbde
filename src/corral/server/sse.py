"""Server-sent events for one prediction, as a raw ASGI response: it sends each event as it
happens and, at the same time, listens for the client going away (which cancels the
prediction when ``cancel_on_disconnect``)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import msgspec

_encode = msgspec.json.Encoder().encode


def format_event(event: str, data: Any) -> bytes:
    # msgspec: a NaN or infinity is null, so every event's data is valid JSON
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class EventStream:
    """An ASGI app streaming ``queue``'s ``(event, data)`` items until a ``completed`` or
    ``error`` one; ``on_disconnect`` runs if the client leaves first."""

    def __init__(self, queue: asyncio.Queue, on_disconnect: Callable[[], None]):
        self.queue = queue
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})
        pump = asyncio.ensure_future(self._pump(send))
        listen = asyncio.ensure_future(self._listen(receive))
        done, _ = await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done:
            listen.cancel()
            pump.result()
            return
        pump.cancel()  # the client left
        self.on_disconnect()

    async def _pump(self, send: Any) -> None:
        while True:
            event, data = await self.queue.get()
            await send({"type": "http.response.body", "body": format_event(event, data),
                        "more_body": event not in ("completed", "error")})
            if event in ("completed", "error"):
                return

    async def _listen(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
