"""Server-sent events for one prediction, as a raw ASGI response: it sends each event as it
happens and, at the same time, listens for the client going away (which cancels the
prediction when ``cancel_on_disconnect``)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable

import msgspec

_encode = msgspec.json.Encoder().encode


def format_event(event: str, data: Any) -> bytes:
    # msgspec: a NaN or infinity is null, so every event's data is valid JSON
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class EventQueue:
    """The ``(event, data)`` pairs waiting for one SSE client, bounded for a chatty model:
    while the client lags, consecutive ``log`` events merge into one (lines joined by
    newlines), and past ``max_log_bytes`` of waiting log text the oldest is dropped, a
    marker line saying how much taking its place. Other events are never merged or dropped
    (outputs are the record's too, and bounded with it). A client that keeps up sees one
    event per line, as before."""

    def __init__(self, max_log_bytes: int):
        self.max_log_bytes = max_log_bytes
        # ("log", [source, text, bytes dropped before text]) or (event, data)
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._log_bytes = 0  # the text of the log events waiting
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item: tuple[str, Any]) -> None:
        event, data = item
        items = self._items
        if event == "log":
            text = data["data"]
            last = items[-1] if items else None
            if last is not None and last[0] == "log" and last[1][0] == data["source"]:
                last[1][1] += "\n" + text
                self._log_bytes += len(text) + 1
            else:
                items.append(("log", [data["source"], text, 0]))
                self._log_bytes += len(text)
            if self._log_bytes > self.max_log_bytes:
                self._trim()
        else:
            items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _trim(self) -> None:
        # Cut the oldest waiting log text (at a line start where there is one) until what
        # waits fits.
        for event, entry in self._items:
            excess = self._log_bytes - self.max_log_bytes
            if excess <= 0:
                return
            if event != "log" or not entry[1]:
                continue
            text = entry[1]
            cut = min(len(text), excess)
            nl = text.find("\n", cut - 1) if cut < len(text) else -1
            cut = nl + 1 if nl >= 0 else len(text)
            entry[1], entry[2] = text[cut:], entry[2] + cut
            self._log_bytes -= cut

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> tuple[str, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event, data = self._items.popleft()
        if event != "log":
            return event, data
        source, text, dropped = data
        self._log_bytes -= len(text)
        if dropped:
            marker = f"[corral: {dropped} bytes of logs dropped: the client reads too slowly]"
            text = marker + ("\n" + text if text else "")
        return "log", {"source": source, "data": text}


class EventStream:
    """An ASGI app streaming ``queue``'s ``(event, data)`` items until a ``completed`` or
    ``error`` one; ``on_disconnect`` runs if the client leaves first."""

    def __init__(self, queue: EventQueue, on_disconnect: Callable[[], None]):
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
