"""The server side of the native protocol: one ``Session`` per WebSocket connection.

::

    receive() --> frames --> [message, blobs...] --> control request (a task; blocking
        |                                            work in threads) --> Answer/Problem
        |                                        --> Call --> the instance's Worker/Pool
        |                                                       |  (its reader thread)
        |                                                       v
        |                          events, chunks, results --> out queue --> writer --> send()
        v
    watchdog: idle connection, stuck writer (slow client) -> close

Backpressure. Everything for the client goes through one out queue, drained by one
writer task that awaits the socket (uvicorn pauses it while the kernel buffer is full).
Streams send a chunk only against a credit the client granted; chunks beyond it wait in
the call's own buffer, and a call whose buffer passes ``stream_buffer`` bytes is
cancelled with StreamOverflow (its client is not reading, or reads more slowly than the
worker produces: the local protocol has no way to pause a generator in its worker). A client whose out queue passes ``send_buffer``
bytes, or that takes no frame for ``send_timeout`` seconds, is disconnected. So a client
that stops reading costs the server a bounded amount of memory.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from typing import Any

import msgspec

from .._version import __version__
from ..exceptions import InvalidState, ProtocolError
from ..protocol import messages as m
from ..server import access
from . import protocol as p
from .codec import EMPTY_CALL, FileFolder, ValueCodec, error_to_wire
from .errors import StreamOverflow, UploadError
from .state import HostState

log = logging.getLogger("corral.host")

_encode = msgspec.msgpack.Encoder().encode
_decode_header = msgspec.msgpack.Decoder(p.ClientMsg).decode
_CLOSE_POLICY = 1008
_CLOSE_TOO_BIG = 1009
_CLOSE_PROTOCOL = 1002
_CLOSE_AWAY = 1001


class _Closing(Exception):
    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason


class _Flight:
    """A call in flight, as the drain sees it (server/drain.py)."""

    __slots__ = ("handle", "finished", "_done", "stream")

    def __init__(self) -> None:
        self.handle: Any = None
        self.finished = False
        self._done: asyncio.Event | None = None
        self.stream: _StreamState | None = None

    @property
    def done(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
            if self.finished:
                self._done.set()
        return self._done

    def finish(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()


class _StreamState:
    __slots__ = ("credit", "pending", "pending_bytes", "final")

    def __init__(self, credit: int):
        self.credit = credit
        self.pending: collections.deque = collections.deque()
        self.pending_bytes = 0
        self.final: Any = None  # the Done/Failed frame, held until the chunks are out


class Session:
    """One client connection speaking the native protocol."""

    def __init__(self, state: HostState, scope: dict, send: Any):
        self.state = state
        self.limits = state.limits
        self.scope = scope
        self._send = send
        self.loop = asyncio.get_running_loop()
        self.codec = ValueCodec(files=FileFolder(str(state.store.uploads), "files-"))
        self.owner = ""
        self.id = f"s{next(_session_ids)}"
        self.instances: set = set()
        self.flights: dict[int, _Flight] = {}
        self.uploads: dict[int, Any] = {}
        self._out: collections.deque = collections.deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._sending_since: float | None = None
        self._last_seen = self.loop.time()
        self._tasks: set[asyncio.Task] = set()
        self.closed = False
        self._close: _Closing | None = None
        self._closed_event = asyncio.Event()

    # -- the connection ---------------------------------------------------------------------

    async def run(self, receive: Any) -> int:
        """Serve the connection until it ends; returns the close code."""
        await self._send({"type": "websocket.accept"})
        writer = self.loop.create_task(self._writer())
        watchdog = self.loop.create_task(self._watchdog())
        code = 1000
        try:
            reader = self.loop.create_task(self._read_all(receive))
            shut = self.loop.create_task(self._closed_event.wait())
            try:
                done, _ = await asyncio.wait({reader, shut},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                shut.cancel()
                if not reader.done():
                    reader.cancel()
            if reader in done:
                reader.result()
        except _Closing as exc:
            self._close = exc
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug here must not take the server down
            log.exception("corral host: session %s failed", self.id)
            self._close = _Closing(1011, "internal error")
        finally:
            self.closed = True
            watchdog.cancel()
            await self._end()
            if self._close is not None:
                code = self._close.code
                await self._flush_then_close(writer, self._close)
            else:
                writer.cancel()
        return code

    async def _read_all(self, receive: Any) -> None:
        message = await asyncio.wait_for(self._frame(receive), self.limits.handshake_timeout)
        if message is None:
            return
        frame, _ = message
        if not isinstance(frame, p.Hello):
            raise _Closing(_CLOSE_PROTOCOL, "the first message must be Hello")
        problem = p.check_version(frame.protocol, frame.corral_version)
        if problem is None and (not isinstance(frame.identity, str)
                                or len(frame.identity) < 16):
            problem = "the client's identity key must be a string of at least 16 characters"
        if problem is not None:
            self._push(p.Refused(p.WireError("HandshakeError", problem)))
            raise _Closing(_CLOSE_PROTOCOL, "handshake refused")
        self.owner = self.state.owner("token" if self.state.token else "local", frame.identity)
        self._push(p.Welcome(p.NATIVE_PROTOCOL, __version__, self.id,
                             self.limits.public()))
        while True:
            message = await self._frame(receive)
            if message is None:
                return
            self._dispatch(*message)

    async def _frame(self, receive: Any) -> tuple[Any, list] | None:
        """The next message and its blobs, or None when the client went away."""
        data = await self._bytes(receive)
        if data is None:
            return None
        if len(data) > self.limits.max_message:
            raise _Closing(_CLOSE_TOO_BIG, f"a message frame of {len(data)} bytes exceeds "
                                           f"{self.limits.max_message}")
        try:
            frame = _decode_header(data)
        except msgspec.DecodeError as exc:
            raise _Closing(_CLOSE_PROTOCOL, f"undecodable frame: {exc}"[:120]) from None
        n = getattr(frame, "blobs", 0)
        if n < 0 or n > self.limits.max_blobs:
            raise _Closing(_CLOSE_PROTOCOL, f"a message announces {n} blobs")
        blobs = []
        total = 0
        for _ in range(n):
            blob = await self._bytes(receive)
            if blob is None:
                return None
            total += len(blob)
            if total > self.limits.max_frame:  # one message's values, all blobs together
                raise _Closing(_CLOSE_TOO_BIG, f"a message's blobs exceed "
                                               f"{self.limits.max_frame} bytes in all")
            blobs.append(blob)
        return frame, blobs

    async def _bytes(self, receive: Any) -> bytes | None:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            return None
        if kind != "websocket.receive":
            return None
        self._last_seen = self.loop.time()
        data = message.get("bytes")
        if data is None:
            raise _Closing(1003, "the native protocol speaks binary frames only")
        return data

    def _dispatch(self, frame: Any, blobs: list) -> None:
        kind = type(frame)
        if kind is p.Call:
            self._call(frame, blobs)
        elif kind is p.Credit:
            self._credit(frame)
        elif kind is p.Cancel:
            self._cancel(frame.id)
        elif kind is p.UploadChunk:
            self._upload_chunk(frame)
        elif kind is p.Ping:
            self._answer(frame.seq, None)
        elif kind is p.Hello:
            raise _Closing(_CLOSE_PROTOCOL, "Hello twice")
        else:
            self._spawn(self._request(frame))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- out queue and writer ---------------------------------------------------------------

    def _push(self, msg: Any, blobs: list = ()) -> None:
        if self.closed and self._close is None:
            return
        frame = _encode(msg)
        size = len(frame) + sum(len(b) for b in blobs)
        self._out.append((frame, blobs, size))
        self._out_bytes += size
        self._wake.set()
        if self._out_bytes > self.limits.send_buffer + size and self._close is None:
            self._shut(_CLOSE_POLICY, f"slow client: {self._out_bytes} bytes wait for it")

    async def _writer(self) -> None:
        send = self._send
        out = self._out
        while True:
            while not out:
                self._wake.clear()
                await self._wake.wait()
            frame, blobs, size = out.popleft()
            self._sending_since = self.loop.time()
            await send({"type": "websocket.send", "bytes": frame})
            for blob in blobs:
                await send({"type": "websocket.send", "bytes": blob})
            self._sending_since = None
            self._out_bytes -= size

    async def _flush_then_close(self, writer: asyncio.Task, closing: _Closing) -> None:
        # What was queued before the close (a Refused, a Failed) still goes out, briefly.
        try:
            deadline = self.loop.time() + 2.0
            while self._out and self.loop.time() < deadline and not writer.done():
                self._wake.set()
                await asyncio.sleep(0.01)
        finally:
            writer.cancel()
        try:
            await self._send({"type": "websocket.close", "code": closing.code,
                              "reason": closing.reason[:120]})
        except Exception:  # noqa: BLE001 - the client may be gone already
            pass

    def _shut(self, code: int, reason: str) -> None:
        if self._close is None:
            log.warning("corral host: closing session %s: %s", self.id, reason)
            self._close = _Closing(code, reason)
        self._closed_event.set()

    async def _watchdog(self) -> None:
        limits = self.limits
        period = max(0.05, min(limits.idle_timeout, limits.send_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            since = self._sending_since
            if since is not None and now - since > limits.send_timeout:
                self._shut(_CLOSE_POLICY, f"slow client: it took no frame for "
                                          f"{limits.send_timeout:g} s")
            elif not self.flights and not self._tasks and not self.instances and \
                    now - self._last_seen > limits.idle_timeout:
                # (a session holding instances is not idle: its model waits for it, and a
                # dead peer is found by the WebSocket keepalive pings instead)
                self._shut(_CLOSE_AWAY, f"idle for {limits.idle_timeout:g} s")

    # -- calls ------------------------------------------------------------------------------

    def _call(self, msg: p.Call, blobs: list) -> None:
        cid = msg.id
        if cid in self.flights:
            raise _Closing(_CLOSE_PROTOCOL, f"call id {cid} is in flight already")
        try:
            if self.state.draining:
                raise InvalidState("the server is shutting down: it takes no new calls")
            inst = self.state.instances.get(self.owner, msg.instance)
            try:
                if not blobs and msg.payload == EMPTY_CALL:
                    args, kwargs, context = (), {}, None
                else:
                    args, kwargs, context = self.codec.decode(msg.payload, blobs)
            except (ValueError, TypeError) as exc:
                raise ProtocolError(f"call {cid} ({msg.method}): its arguments cannot be "
                                    f"decoded here: {exc}") from None
            if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
                raise ProtocolError(f"call {cid}: malformed arguments")
            runner = inst.runner
            info = runner.methods.get(msg.method)
            flight = _Flight()
            if info is not None and info.streams:
                opts = runner.options(context=context, timeout=msg.timeout,
                                      convert=msg.convert, idempotent=msg.idempotent)
                stream = opts.awatch(msg.method, *args, **kwargs)
                flight.handle = stream
                flight.stream = _StreamState(max(0, msg.credit))
                self.flights[cid] = flight
                self._spawn(self._pump(cid, flight, stream))
                return
            on_event = self._events_of(cid)
            opts = runner.options(context=context, timeout=msg.timeout, convert=msg.convert,
                                  idempotent=msg.idempotent, on_event=on_event)
            fut = opts.submit(msg.method, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - each becomes that call's error
            self._push(p.Failed(cid, error_to_wire(exc)))
            return
        flight.handle = fut
        self.flights[cid] = flight
        loop = self.loop
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._settle, cid, f))

    def _events_of(self, cid: int) -> Any:
        loop, push = self.loop, self._push_event

        def on_event(event: Any) -> None:
            loop.call_soon_threadsafe(push, cid, event)
        return on_event

    def _push_event(self, cid: int, event: Any) -> None:
        if cid in self.flights:
            self._push(_renumber(event, cid))

    def _settle(self, cid: int, fut: Any) -> None:
        flight = self.flights.pop(cid, None)
        if flight is None:
            return
        flight.finish()
        try:
            value = fut.result()
        except BaseException as exc:  # noqa: BLE001 - Cancelled is a BaseException here
            self._push(p.Failed(cid, error_to_wire(exc)))
            return
        self._push_value(cid, value, fut.run_time or 0.0)

    def _push_value(self, cid: int, value: Any, run_time: float) -> None:
        try:
            raw, blobs = self.codec.encode(value, "the result")
        except (TypeError, ValueError) as exc:
            self._push(p.Failed(cid, error_to_wire(exc)))
            return
        self._push(p.Done(cid, raw, run_time, len(blobs)), blobs)

    async def _pump(self, cid: int, flight: _Flight, stream: Any) -> None:
        """Move a streaming call's messages to the client, chunks against credit."""
        st = flight.stream
        assert st is not None
        try:
            async for event in stream:
                kind = type(event)
                if kind is m.Chunk:
                    try:
                        raw, blobs = self.codec.encode(event.value, "a stream chunk")
                    except (TypeError, ValueError) as exc:
                        stream.cancel()
                        self._end_stream(cid, flight, p.Failed(cid, error_to_wire(exc)), ())
                        return
                    item = (p.Chunk(cid, raw, len(blobs)), blobs)
                    if st.credit > 0 and not st.pending:
                        st.credit -= 1
                        self._push(*item)
                    else:
                        st.pending.append(item)
                        # (what a held chunk costs beyond its bytes: its Python objects)
                        st.pending_bytes += len(raw) + sum(len(b) for b in blobs) + 256
                        if st.pending_bytes > self.limits.stream_buffer:
                            stream.cancel()
                            st.pending.clear()
                            self._end_stream(cid, flight, p.Failed(cid, error_to_wire(
                                StreamOverflow(
                                    f"call {cid} ({stream.method}) was cancelled: its "
                                    f"client granted no credit while more than "
                                    f"{self.limits.stream_buffer} bytes of chunks waited "
                                    "(it reads more slowly than the stream produces)"))), ())
                            return
                elif kind is m.Done:
                    try:
                        raw, blobs = self.codec.encode(event.value, "the result")
                        final = (p.Done(cid, raw, event.run_time, len(blobs)), blobs)
                    except (TypeError, ValueError) as exc:
                        final = (p.Failed(cid, error_to_wire(exc)), ())
                    self._end_stream(cid, flight, *final)
                    return
                else:
                    self._push(_renumber(event, cid))
        except asyncio.CancelledError:
            stream.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - Cancelled, crashes: the call's error
            self._end_stream(cid, flight, p.Failed(cid, error_to_wire(exc)), ())

    def _end_stream(self, cid: int, flight: _Flight, msg: Any, blobs: Any) -> None:
        st = flight.stream
        if st is not None and st.pending:
            st.final = (msg, blobs)  # sent after the chunks, as credit comes
            return
        self.flights.pop(cid, None)
        flight.finish()
        self._push(msg, blobs)

    def _credit(self, msg: p.Credit) -> None:
        flight = self.flights.get(msg.id)
        if flight is None or flight.stream is None:
            return
        st = flight.stream
        st.credit = min(st.credit + max(0, msg.n), 1 << 30)
        while st.credit > 0 and st.pending:
            st.credit -= 1
            item = st.pending.popleft()
            st.pending_bytes -= len(item[0].value) + sum(len(b) for b in item[1]) + 256
            self._push(*item)
        if not st.pending and st.final is not None:
            final, st.final = st.final, None
            self.flights.pop(msg.id, None)
            flight.finish()
            self._push(*final)

    def _cancel(self, cid: int) -> None:
        flight = self.flights.get(cid)
        if flight is not None and flight.handle is not None:
            flight.handle.cancel()

    # -- requests ---------------------------------------------------------------------------

    def _answer(self, seq: int, value: Any) -> None:
        self._push(p.Answer(seq, msgspec.Raw(_encode(value))))

    async def _request(self, msg: Any) -> None:
        seq = msg.seq
        try:
            value = await self._handle(msg)
        except Exception as exc:  # noqa: BLE001 - the request's error, typed
            self._push(p.Problem(seq, error_to_wire(exc)))
            return
        self._answer(seq, value)

    async def _handle(self, msg: Any) -> Any:
        state, owner = self.state, self.owner
        kind = type(msg)
        if kind is p.UploadBegin:
            upload = state.store.begin(msg.hash, msg.size, msg.chunks, msg.name)
            existing = state.store.get(msg.hash)
            if existing is not None:
                upload.close()
                return {"have": True, "program": existing}
            if len(self.uploads) >= 4:
                upload.close()
                raise UploadError("this session has 4 uploads under way already")
            self.uploads[msg.seq] = upload
            return {"have": False}
        if kind is p.Launch:
            if state.draining:
                raise InvalidState("the server is shutting down: it launches nothing")
            inst = await asyncio.to_thread(state.launch, owner, msg)
            if self.closed and not msg.detached:
                await asyncio.to_thread(state.instances.stop, inst)
                raise InvalidState("the session ended during the launch")
            state.instances.attach(inst, self)
            self.instances.add(inst)
            return inst.info()
        if kind is p.ListInstances:
            return [i.info() for i in state.instances.of(owner)]
        if kind is p.Capabilities:
            return await asyncio.to_thread(state.capabilities)
        if kind is p.Bye:
            await self._end()
            return None
        inst = state.instances.get(owner, msg.instance) if getattr(msg, "instance", None) \
            is not None else None
        if kind is p.Attach:
            state.instances.attach(inst, self)
            self.instances.add(inst)
            return inst.info()
        if kind is p.Detach:
            for i in ([inst] if inst is not None else list(self.instances)):
                i.detached = True
            return None
        if kind is p.Stop:
            self.instances.discard(inst)
            await asyncio.to_thread(state.instances.stop, inst, msg.grace)
            return None
        if kind is p.Query:
            runner = inst.runner
            if msg.what == "health":
                return await asyncio.to_thread(runner.health, msg.timeout or 5.0)
            if msg.what == "stats":
                return await asyncio.to_thread(runner.stats)
            if msg.what == "describe":
                return await asyncio.to_thread(runner.describe, msg.timeout or 30.0)
            if msg.what == "info":
                return inst.info()
            raise ValueError(f"unknown query {msg.what!r}")
        if kind is p.Reload:
            await asyncio.to_thread(inst.runner.reload, msg.config)
            inst.config = dict(msg.config) if msg.config is not None else inst.config
            return inst.info()
        raise ProtocolError(f"unexpected message {kind.__name__}")

    def _upload_chunk(self, msg: p.UploadChunk) -> None:
        upload = self.uploads.get(msg.upload)
        if upload is None:
            self._push(p.Problem(msg.seq, error_to_wire(UploadError(
                f"no upload {msg.upload} under way in this session (it failed, finished, "
                "or was never begun)"))))
            return
        try:
            complete = upload.add(msg.index, msg.data)
        except UploadError as exc:
            self.uploads.pop(msg.upload, None)
            self._push(p.Problem(msg.seq, error_to_wire(exc)))
            return
        if complete:
            self.uploads.pop(msg.upload, None)
            self._spawn(self._finish_upload(msg.seq, upload))

    async def _finish_upload(self, seq: int, upload: Any) -> None:
        try:
            info = await asyncio.to_thread(upload.finish)
        except Exception as exc:  # noqa: BLE001
            self._push(p.Problem(seq, error_to_wire(exc)))
            return
        self._answer(seq, {"have": False, "program": info})

    # -- the end ----------------------------------------------------------------------------

    async def _end(self) -> None:
        """Cancel this session's calls; stop its attached instances (detached ones linger);
        drop its uploads. Idempotent."""
        for flight in list(self.flights.values()):
            handle = flight.handle
            if handle is not None:
                handle.cancel()
        for upload in list(self.uploads.values()):
            upload.close()
        self.uploads.clear()
        instances, self.instances = list(self.instances), set()
        if instances:
            registry = self.state.instances
            await asyncio.to_thread(lambda: [registry.detach(i, self) for i in instances])
        if self.closed:
            for task in list(self._tasks):
                task.cancel()
            self.codec.files.close()


def _renumber(event: Any, cid: int) -> Any:
    kind = type(event)
    if kind is m.Log:
        return m.Log(cid, event.stream, event.text)
    if kind is m.Progress:
        return m.Progress(cid, event.step, event.total, event.phase)
    if kind is m.Metric:
        return m.Metric(cid, event.name, event.value, event.mode)
    return event


_session_ids = itertools.count(1)


class NativeEndpoint:
    """The ASGI app of the native protocol's WebSocket path."""

    def __init__(self, state: HostState, sessions: set | None = None):
        self.state = state
        self.sessions = sessions if sessions is not None else set()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await _plain_answer(send, 426, "this path speaks WebSocket (corral's native "
                                          "protocol)")
            return
        t0 = time.perf_counter()
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        state = self.state
        refusal = state.upgrade_problem(scope)
        if refusal is not None:
            await reject(scope, send, *refusal)
            _log_access(scope, refusal[0], t0)
            return
        state.connections += 1
        session = Session(state, scope, send)
        self.sessions.add(session)
        code = 1006
        try:
            code = await session.run(receive)
        finally:
            self.sessions.discard(session)
            state.connections -= 1
            _log_access(scope, code, t0)


async def reject(scope: dict, send: Any, status: int, text: str) -> None:
    """Refuse a WebSocket upgrade with an HTTP answer (or a bare 403 where the server
    cannot send one)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": _CLOSE_POLICY})


async def _plain_answer(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


def _log_access(scope: dict, status: int, t0: float) -> None:
    logger = access.log
    if logger.isEnabledFor(logging.INFO):
        client = scope.get("client")
        access.write(logger, {"method": "WEBSOCKET", "path": scope["path"], "status": status,
                              "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                              "client": f"{client[0]}:{client[1]}" if client else None})
