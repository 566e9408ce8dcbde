"""The client's transport: one WebSocket to a ``corral host``, and everything that moves
over it. All the wire logic of the client is here; Session and RemoteWorker only build
requests and calls.

The websockets library's receiving thread hands each message to ``_on_message``, which
rebuilds values on their blobs and hands each call's messages to its sink (host/calls.py: the same futures and streams a local Worker
gives) through the sink's ``_event``/``_chunk``/``_done``/``_failed``. Requests (upload,
launch...) wait on a ``concurrent.futures.Future`` by sequence number. Sends are
serialized by one lock (a message and its blobs go out together). When the connection
ends, every call in flight and every request fails with ``ConnectionLost`` at once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import threading
from typing import Any

import msgspec

from .._version import __version__
from ..exceptions import ProtocolError
from ..host.calls import settle
from . import protocol as p
from .codec import ValueCodec, error_from_wire
from .errors import AuthenticationError, ConnectionLost, HandshakeError

log = logging.getLogger("corral.remote")

_encode = msgspec.msgpack.Encoder().encode
#: Chunks a stream may send before the client grants more; granted in halves.
STREAM_CREDIT = 64


def _connection_class() -> Any:
    """websockets' sync ClientConnection, delivering each message to ``on_message`` in its
    own receiving thread once set (one thread hop less per reply than reading with
    ``recv()`` from a thread of ours), and calling ``on_end`` when it stops receiving."""
    from websockets.frames import Opcode
    from websockets.sync.client import ClientConnection

    class Connection(ClientConnection):
        on_message: Any = None
        on_end: Any = None
        _parts: list | None = None

        def process_event(self, event: Any) -> None:
            handler = self.on_message
            if handler is None or self.response is None \
                    or event.opcode not in (Opcode.BINARY, Opcode.CONT, Opcode.TEXT):
                super().process_event(event)
                return
            if event.opcode is not Opcode.CONT:
                self._parts = []
            if self._parts is None:
                return  # a continuation without a start: nothing to join it to
            self._parts.append(event.data)
            if not event.fin:
                return
            parts, self._parts = self._parts, None
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            handler(bytes(data) if event.opcode is Opcode.TEXT else data)

        def recv_events(self) -> None:
            try:
                super().recv_events()
            finally:
                if self.on_end is not None:
                    self.on_end()

    return Connection


class Link:
    """One connection. ``url`` is ``ws://host:port`` (the native path is added when the
    URL has none) or a full ``ws://.../v1/corral``."""

    def __init__(self, url: str, *, token: str | None, identity: str,
                 open_timeout: float = 10.0, ping_interval: float | None = 10.0):
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        from ..protocol.values import make_ext_hook

        self.url = _native_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._ws = connect(self.url, additional_headers=headers, compression=None,
                               proxy=None, max_size=None, open_timeout=open_timeout,
                               ping_interval=ping_interval, ping_timeout=ping_interval,
                               close_timeout=2.0, create_connection=_connection_class(),
                               ).__enter__()  # (websockets >= 17.1 asks
            # for a context manager; this object's lifetime is the Link's, closed by close())
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = bytes(exc.response.body or b"").decode("utf-8", "replace").strip()
            if status == 401:
                raise AuthenticationError(f"{self.url}: the server refused the token "
                                          f"({body or 'HTTP 401'})") from None
            raise HandshakeError(f"{self.url}: the server refused the session: HTTP "
                                 f"{status} {body}".rstrip()) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise HandshakeError(f"cannot open a session at {self.url}: {exc}") from None
        self._decode = msgspec.msgpack.Decoder(
            p.ServerMsg, ext_hook=make_ext_hook(False)).decode
        self.codec = ValueCodec()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._calls: dict[int, Any] = {}
        self._per_instance: collections.Counter[str] = collections.Counter()  # in flight
        self._received: dict[int, int] = {}  # chunks since the last credit, per stream
        self._requests: dict[int, concurrent.futures.Future] = {}
        self._seqs = itertools.count(1)
        self.ids = itertools.count(1)
        self._error: BaseException | None = None
        self.closed = False
        try:
            self._send(p.Hello(p.NATIVE_PROTOCOL, __version__, identity, "corral-python"))
            welcome = self._decode(self._ws.recv(timeout=open_timeout))
        except Exception as exc:  # noqa: BLE001
            self._ws.close()
            raise HandshakeError(f"{self.url}: no answer to the handshake: {exc}") from None
        if isinstance(welcome, p.Refused):
            self._ws.close()
            raise error_from_wire(welcome.error)
        if not isinstance(welcome, p.Welcome):
            self._ws.close()
            raise HandshakeError(f"{self.url}: the server answered the handshake with "
                                 f"{type(welcome).__name__}")
        problem = p.check_version(welcome.protocol, welcome.corral_version, ours="client")
        if problem is not None:
            self._ws.close()
            raise HandshakeError(problem)
        self.session_id = welcome.session
        self.limits = welcome.limits
        self._pending: Any = None  # a message waiting for its blobs
        self._blobs: list = []
        self._ended = threading.Event()
        self._ws.on_end = self._on_end
        self._ws.on_message = self._on_message

    # -- sending ----------------------------------------------------------------------------

    def _send(self, msg: Any, blobs: Any = ()) -> None:
        frame = _encode(msg)
        with self._send_lock:
            self._ws.send(frame)
            for blob in blobs:
                self._ws.send(blob)

    def _check_open(self) -> None:
        if self._error is not None:
            raise ConnectionLost(f"the connection to {self.url} is closed: "
                                 f"{self._error}") from self._error

    def request(self, make: Any, timeout: float | None = None) -> tuple[Any, list]:
        """Send ``make(seq)`` and wait for its answer: (raw value, blobs). Raises the
        server's error for it, ConnectionLost when the connection ends first."""
        fut = self.begin_request(make)
        return self.wait(fut, timeout)

    def begin_request(self, make: Any) -> concurrent.futures.Future:
        seq = next(self._seqs)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.seq = seq  # type: ignore[attr-defined]
        with self._lock:
            self._check_open()
            self._requests[seq] = fut
        try:
            self._send(make(seq))
        except Exception as exc:
            with self._lock:
                self._requests.pop(seq, None)
            raise self._lost(exc) from exc
        return fut

    def send_more(self, msg: Any) -> None:
        """Send a message that belongs to a request already begun (upload chunks)."""
        try:
            self._send(msg)
        except Exception as exc:
            raise self._lost(exc) from exc

    def wait(self, fut: concurrent.futures.Future, timeout: float | None) -> Any:
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._requests.pop(fut.seq, None)  # type: ignore[attr-defined]
            raise TimeoutError(f"no answer from {self.url} within {timeout} s") from None

    def call(self, instance: str, sink: Any, args: tuple, kwargs: dict, opts: Any) -> None:
        """Send call ``sink.id``; its messages go to ``sink`` from now on."""
        raw, blobs = self.codec.encode_call(args, kwargs, opts.context)
        msg = p.Call(sink.id, instance, sink.method, raw, len(blobs), opts.timeout,
                     opts.convert, STREAM_CREDIT, opts.idempotent)
        sink._owner = self
        sink._instance = instance
        with self._lock:
            self._check_open()
            self._calls[sink.id] = sink
            self._per_instance[instance] += 1
        try:
            self._send(msg, blobs)
        except Exception as exc:
            with self._lock:
                self._pop(sink.id)
            raise self._lost(exc) from exc
        sink._sent = True

    def cancel(self, sink: Any, error: BaseException) -> bool:
        """A sink's ``_cancel_with``: fail it now and tell the server to stop the work."""
        with self._lock:
            if self._pop(sink.id) is None:
                return False
            self._received.pop(sink.id, None)
        settle(sink, error=error)
        try:
            self._send(p.Cancel(sink.id))
        except Exception:  # noqa: BLE001 - gone: the server ends the call itself
            pass
        return True

    def in_flight(self, instance: str | None = None) -> int:
        """Calls in flight on this connection, or to one ``instance``."""
        return len(self._calls) if instance is None else self._per_instance[instance]

    def _pop(self, call_id: int) -> Any:
        # (under _lock) forget a call: the sink, or None if it was not in flight
        sink = self._calls.pop(call_id, None)
        if sink is not None:
            left = self._per_instance[sink._instance] - 1
            if left:
                self._per_instance[sink._instance] = left
            else:
                del self._per_instance[sink._instance]
        return sink

    # -- receiving --------------------------------------------------------------------------

    def _on_message(self, data: Any) -> None:
        """Each WebSocket message, in the receiving thread: a message frame, or one of the
        blobs the last one announced."""
        try:
            pending = self._pending
            if pending is not None:
                self._blobs.append(data)
                if len(self._blobs) < pending.blobs:
                    return
                blobs, self._blobs, self._pending = self._blobs, [], None
                self._route(pending, blobs)
                return
            msg = self._decode(data)
            if getattr(msg, "blobs", 0):
                self._pending = msg
                return
            self._route(msg, [])
        except Exception as exc:  # noqa: BLE001 - a server that breaks the protocol
            log.error("corral.remote: undecodable message from %s: %s", self.url, exc)
            self._broken(ProtocolError(f"{self.url} sent an undecodable message: {exc}"))
            try:
                self._ws.close(1002)
            except Exception:  # noqa: BLE001
                pass

    def _on_end(self) -> None:
        try:
            exc = self._ws.protocol.close_exc
        except Exception:  # noqa: BLE001 - no close frame at all
            exc = None
        self._broken(exc)
        self._ended.set()

    def _route(self, msg: Any, blobs: list) -> None:
        kind = type(msg)
        if kind is p.Done:
            with self._lock:
                sink = self._pop(msg.id)
                self._received.pop(msg.id, None)
            if sink is not None:
                try:
                    value = self.codec.decode(msg.value, blobs)
                except (ValueError, TypeError) as exc:
                    settle(sink, error=ProtocolError(f"the result of call {msg.id} "
                                                     f"({sink.method}) cannot be decoded: "
                                                     f"{exc}"))
                    return
                settle(sink, value, msg.run_time)
        elif kind is p.Chunk:
            sink = self._calls.get(msg.id)
            if sink is None:
                return
            try:
                value = self.codec.decode(msg.value, blobs)
            except (ValueError, TypeError) as exc:
                self.cancel(sink, ProtocolError(f"a chunk of call {msg.id} ({sink.method}) "
                                                f"cannot be decoded: {exc}"))
                return
            sink._chunk(value)
            got = self._received.get(msg.id, 0) + 1
            if got >= STREAM_CREDIT // 2:
                got = 0
                try:
                    self._send(p.Credit(msg.id, STREAM_CREDIT // 2))
                except Exception:  # noqa: BLE001 - the reader sees the end next
                    pass
            self._received[msg.id] = got
        elif kind is p.Failed:
            with self._lock:
                sink = self._pop(msg.id)
                self._received.pop(msg.id, None)
            if sink is not None:
                settle(sink, error=error_from_wire(msg.error))
        elif kind is p.Answer or kind is p.Problem:
            with self._lock:
                fut = self._requests.pop(msg.seq, None)
            if fut is None:
                return
            if kind is p.Answer:
                fut.set_result((msg.value, blobs))
            else:
                fut.set_exception(error_from_wire(msg.error))
        else:  # Log, Progress, Metric
            sink = self._calls.get(msg.id)
            if sink is not None:
                sink._event(msg)

    def _lost(self, exc: BaseException | None) -> ConnectionLost:
        if isinstance(exc, ConnectionLost):
            return exc
        return ConnectionLost(f"the connection to {self.url} ended"
                              + (f": {exc}" if exc is not None else ""))

    def _broken(self, error: BaseException | None) -> None:
        from websockets.exceptions import ConnectionClosedOK

        if self.closed and (error is None or isinstance(error, ConnectionClosedOK)):
            lost = ConnectionLost(f"the session with {self.url} was closed")
        else:
            lost = self._lost(error)
        with self._lock:
            self._error = self._error or lost
            calls, self._calls = self._calls, {}
            self._per_instance.clear()
            requests, self._requests = self._requests, {}
        for sink in calls.values():
            settle(sink, error=lost)
        for fut in requests.values():
            if not fut.done():
                fut.set_exception(lost)

    def close(self) -> None:
        """Close the connection (idempotent); calls in flight fail with ConnectionLost, and
        the files received in this session are removed."""
        self.closed = True
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001
            pass
        self._ended.wait(5.0)
        self.codec.files.close()  # the files that arrived in this session


def _native_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"a corral host URL starts with ws:// or wss://, not {url!r}")
    if parts.query:
        raise ValueError("put the token in token=, not in the URL (URLs end up in logs)")
    path = parts.path if parts.path not in ("", "/") else p.PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))
