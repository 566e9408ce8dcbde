"""Slow clients cannot hold the server: connection limits and read timeouts for uvicorn.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and nothing else: a
client that opens a connection and sends its headers one byte a minute (slowloris), or a
body one byte a minute, holds a socket and a parser forever, and uvicorn's
``limit_concurrency`` only answers 503 once a request's headers are complete, so it never
sees those clients. This protocol, uvicorn's httptools one with four additions, does:

* **header timeout**: a request's line and headers must arrive within ``header_timeout``
  seconds of its first byte (or of the connection, for the first request); else 408 and
  the connection is closed;
* **header size**: at most ``max_header_bytes`` of request line and headers; else 431;
* **body timeout**: while a request's body is being read, ``body_timeout`` seconds may
  pass between two pieces of it (as nginx's ``client_body_timeout``); else 408 (or just
  the close, once an answer has begun). Time while the app is not reading (the server
  holds back on a full buffer) does not count;
* **connection cap**: beyond ``max_connections`` open connections, a new one is answered
  503 and closed at once, so sockets and memory stay bounded however many clients come.

``keep_alive_timeout`` is uvicorn's own ``timeout_keep_alive``. ``server_config()`` builds
the ``uvicorn.Config`` that ``serve()`` (and ``corral host``) use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("corral.server")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        for name in ("max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class _HeadersTooLarge(Exception):
    pass


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def protocol_class(limits: ConnectionLimits) -> type:
    """uvicorn's httptools protocol, with ``limits`` applied (see the module's doc)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Lazy timers: a deadline is a start time (``_head_since``/``_body_since``,
            # None when nothing is timed), and its timer, once armed, stays armed; when it
            # fires it checks the time and arms again for what is left. Arming and
            # cancelling a timer for every request and every piece of a body cost more
            # than the rest of this class (3 timers and 3 cancels per keep-alive request).
            self._head_timer: Any = None
            self._body_timer: Any = None
            self._head_since: float | None = None
            self._body_since: float | None = None
            self._head_bytes = 0
            self._too_large = False

        # -- connection --------------------------------------------------------------

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("refusing a connection: %d open (max_connections=%d)",
                            len(self.connections) - 1, limits.max_connections)
                self._close_with(_answer(503, "Service Unavailable",
                                         "too many connections; try again later"))
                return
            self._arm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timers()
            super().connection_lost(exc)

        def _close_with(self, answer: bytes | None) -> None:
            self._stop_timers()
            if not self.transport.is_closing():
                if answer is not None:
                    self.transport.write(answer)
                self.transport.close()

        def _stop_timers(self) -> None:
            self._head_since = self._body_since = None
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        # -- the head: request line and headers ---------------------------------------

        def _arm_head(self) -> None:
            self._head_since = now = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(now + limits.header_timeout,
                                                     self._head_check)

        def _cancel_head(self) -> None:
            self._head_since = None  # (its timer, if armed, finds nothing to time)

        def _head_check(self) -> None:
            self._head_timer = None
            since = self._head_since
            if since is None:
                return
            deadline = since + limits.header_timeout
            if self.loop.time() < deadline:  # (a later request's head: time what is left)
                self._head_timer = self.loop.call_at(deadline, self._head_check)
                return
            self._close_with(_answer(408, "Request Timeout",
                                     f"the request's headers did not arrive within "
                                     f"{limits.header_timeout:g} s"))

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > limits.max_header_bytes:
                self._too_large = True
                raise _HeadersTooLarge()  # httptools stops; uvicorn calls send_400_response

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._close_with(_answer(431, "Request Header Fields Too Large",
                                         f"the request line and headers passed "
                                         f"{limits.max_header_bytes} bytes"))
                return
            self._cancel_head()
            super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm_head()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._cancel_head()
            super().on_headers_complete()
            if self.parser.should_upgrade():
                return
            if self.cycle is not None and self.cycle.more_body:
                self._arm_body()

        # -- the body ------------------------------------------------------------------

        def _arm_body(self) -> None:
            self._body_since = now = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_at(now + limits.body_timeout,
                                                     self._body_check)

        def _body_check(self) -> None:
            self._body_timer = None
            since = self._body_since
            if since is None:
                return
            deadline = since + limits.body_timeout
            if self.loop.time() < deadline:  # a piece came since: time what is left
                self._body_timer = self.loop.call_at(deadline, self._body_check)
                return
            if self.flow is not None and self.flow.read_paused:
                self._arm_body()  # the app is not reading: not the client's delay
                return
            cycle = self.cycle
            started = cycle is not None and cycle.response_started
            self._close_with(None if started else _answer(
                408, "Request Timeout",
                f"no part of the request's body came for {limits.body_timeout:g} s"))

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self._body_since is not None:
                self._body_since = self.loop.time()

        def on_message_complete(self) -> None:
            self._body_since = None
            super().on_message_complete()

    return GuardedHttpToolsProtocol


def server_config(app: Any, host: str, port: int, limits: ConnectionLimits | None = None,
                  **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` serving ``app`` on ``host:port`` under ``limits``; ``kwargs``
    go to uvicorn as they are."""
    import uvicorn

    limits = limits or ConnectionLimits()
    return uvicorn.Config(app, host=host, port=port, http=protocol_class(limits),
                          timeout_keep_alive=limits.keep_alive_timeout, **kwargs)
