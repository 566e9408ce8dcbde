"""What a caller holds while a call runs: a future, a stream, or their asyncio twins.

Each receives the call's messages from the connection's reader thread through four
methods (``_event``, ``_chunk``, ``_done``, ``_failed``) and records the call's events:
``events`` (every Log, Progress and Metric in order), ``logs`` (the log lines), ``metrics``
(accumulated by each metric's mode), ``progress`` (the latest Progress) and ``run_time``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable

from ..protocol import messages as m
from .logbuffer import EventLog

log = logging.getLogger("corral")

EventCallback = Callable[[Any], None]

_END = object()
_MAKING = threading.Lock()
_RUNNING = concurrent.futures._base.RUNNING  # (the same str objects: compared with `is`)
_FINISHED = concurrent.futures._base.FINISHED


def settle(sink: Any, value: Any = None, run_time: float = 0.0,
           error: BaseException | None = None) -> None:
    """End ``sink`` with its result, or with ``error``: the one way a waiter ends (replies,
    a broken or closed connection, cancels, deadlines, the restart queue), so that every
    waiter ends, whatever else goes wrong. Never raises: a sink that cannot take its
    result gets the error instead; one that cannot take either (its event loop is
    closed: nobody waits any more) is logged. A sink that already ended stays as it is."""
    if error is None:
        try:
            sink._done(value, run_time)
            return
        except concurrent.futures.InvalidStateError:
            return  # it ended already (cancelled meanwhile)
        except BaseException as exc:  # noqa: BLE001 - the caller still gets an outcome
            error = exc
    try:
        sink._failed(error)
    except concurrent.futures.InvalidStateError:
        pass
    except BaseException:  # noqa: BLE001
        log.exception("corral: call %s could not be completed", getattr(sink, "id", "?"))


class CallRecord:
    """The events of one call, as they arrive."""

    id: int
    method: str
    metrics: dict[str, Any]
    #: The runner it was sent to (set by its runner for futures and streams).
    worker: Any = None
    #: Output credit (host/flow.py) of a flow-controlled stream, and the feeder of the
    #: call's streamed arguments (host/instream.py); class-level None for every other call.
    _flow: Any = None
    _feed: Any = None
    # The rest start as these class-level values (each call sets only what differs: a sink
    # is made per call, and every attribute set in its __init__ is measurable).
    run_time: float | None = None
    _sent = False  # set by the connection once the Call is on the wire
    _size = 0  # bytes of its frame, counted in the connection's window
    _owner: Any = None  # who can cancel it now: its Connection, or the deferral queue
    _timer: Any = None  # its deadline (host/timers.py), if it has a timeout
    _events: EventLog | None = None  # made by the first event (most calls have none)
    _on_event: EventCallback | None = None
    #: A streaming method called for one result: its chunks, collected into a list.
    _chunks: list | None = None

    def _init_record(self, call_id: int, method: str, on_event: EventCallback | None,
                     streams: bool = False) -> None:
        self.id = call_id
        self.method = method
        self.metrics = {}
        if on_event is not None:
            self._on_event = on_event
        if streams:
            self._chunks = []

    @property
    def sent(self) -> bool:
        """True once the call went to the worker process (it may have run, or be running);
        False while it waits on the host."""
        return self._sent

    @property
    def queued(self) -> bool:
        """True while the call waits in a Pool's own queue (never, for a Worker's call: a
        Worker takes every call at once, into its window or its restart queue)."""
        return False

    @property
    def attempts(self) -> int:
        """How many times the call was handed to a worker (a Pool may retry it)."""
        return 1

    def add_sent_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the call has left its runner's own queue (a Pool's). For a
        Worker's call that is at once, on this thread."""
        fn()

    @property
    def events(self) -> EventLog:
        """Every Log, Progress and Metric of the call, in order (Log text capped, oldest
        dropped first: logbuffer.py)."""
        events = self._events
        if events is None:
            with _MAKING:  # (the reader and a caller may both ask first)
                events = self._events
                if events is None:
                    events = self._events = EventLog()
        return events

    @property
    def logs(self) -> list[str]:
        """The call's log lines (stdout and stderr, in order)."""
        return [e.text for e in self.events if type(e) is m.Log]

    @property
    def progress(self) -> m.Progress | None:
        """The latest progress report, if any."""
        for e in reversed(self.events):
            if type(e) is m.Progress:
                return e
        return None

    def _record(self, event: Any) -> None:
        self.events.append(event)
        if type(event) is m.Metric:
            _apply_metric(self.metrics, event)

    def _notify(self, event: Any) -> None:
        cb = self._on_event
        if cb is not None:
            try:
                cb(event)
            except Exception:  # noqa: BLE001 - a caller's callback must not break the channel
                log.exception("on_event callback for call %s raised", self.id)

    def _event(self, event: Any) -> None:
        self._record(event)
        self._notify(event)

    def _chunk(self, value: Any) -> None:
        if self._chunks is not None:
            self._chunks.append(value)

    def _cancel_with(self, error: BaseException) -> bool:
        """Cancel the call with ``error`` wherever it is (queued on the host, in a restart's
        queue, or running in the worker); False when it has already finished."""
        while True:
            owner = self._owner
            if owner is None:
                return False
            if owner.cancel(self, error):
                return True
            if self._owner is owner:  # (it may have moved from a queue to a connection)
                return False

    def _cancel_error(self) -> BaseException:
        from ..exceptions import Cancelled

        return Cancelled(f"call {self.id} ({self.method}) was cancelled")

    def _outcome(self, value: Any) -> Any:
        """The call's result: the collected chunks of a streaming method, else ``value``."""
        return self._chunks if self._chunks is not None else value


def _apply_metric(metrics: dict[str, Any], ev: m.Metric) -> None:
    if ev.mode == "increment":
        try:
            metrics[ev.name] = metrics.get(ev.name, 0) + ev.value
        except TypeError:
            metrics[ev.name] = ev.value
    elif ev.mode == "append":
        current = metrics.get(ev.name)
        if not isinstance(current, list):
            current = metrics[ev.name] = []
        current.append(ev.value)
    else:
        metrics[ev.name] = ev.value


class CallFuture(CallRecord, concurrent.futures.Future):
    """A ``concurrent.futures.Future`` for one call, with the call's events.

    For a streaming method, the result is the list of every chunk.
    """

    def __init__(self, call_id: int, method: str, streams: bool,
                 on_event: EventCallback | None = None):
        # Future.__init__, but with a plain Lock under the Condition (Future never re-enters
        # it) and born RUNNING: an RLock and an extra state change per call are measurable.
        self._condition = _Condition()
        self._state = _RUNNING
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []
        self._init_record(call_id, method, on_event, streams)

    def _done(self, value: Any, run_time: float) -> None:
        # Future.set_result, without the Condition's notify when nobody waits on it.
        self.run_time = run_time
        result = self._outcome(value)
        with self._condition:
            if self._state is not _RUNNING:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            if self._condition._waiters:
                self._condition.notify_all()
        if self._done_callbacks:
            self._invoke_callbacks()

    def _failed(self, exc: BaseException) -> None:
        self.set_exception(exc)

    def _invoke_callbacks(self) -> None:
        # Future's, letting go of the callbacks once they ran (a callback that refers back
        # to its future, as most do, would otherwise leave a cycle for the collector).
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - as Future: a callback's error is logged
                log.exception("exception calling callback for %r", self)

    def result(self, timeout: float | None = None) -> Any:
        """The call's result (as ``concurrent.futures.Future.result``). Without a timeout
        the waiting thread reads the worker's replies itself when nobody else does (no
        hand-off from the reader thread), delivering other calls' replies on the way."""
        if self._state is _RUNNING:
            owner = self._owner
            if timeout is not None:
                want = getattr(owner, "want_reader", None)
                if want is not None:
                    want()
            else:
                while self._state is _RUNNING:
                    lead = getattr(owner, "lead_future", None)
                    if lead is None or lead(self):
                        break
                    # Someone else reads: they deliver, or let go of the socket (and say so).
                    with self._condition:
                        if self._state is _RUNNING and owner.waiting_for(self):
                            self._condition.wait()
                    owner = self._owner
        if self._state is _FINISHED and self._exception is None:
            return self._result  # (both set before the state, under the lock)
        return super().result(timeout)

    def cancel(self) -> bool:
        """Cancel the call, also while it runs (unlike a plain concurrent.futures.Future):
        the worker stops it, and ``result()`` raises ``corral.Cancelled`` (a
        ``concurrent.futures.CancelledError``) at once. False if it already finished."""
        if self.done():
            return self.cancelled()
        self._cancel_with(self._cancel_error())
        return self.cancelled()

    def cancelled(self) -> bool:
        from ..exceptions import Cancelled

        with self._condition:
            return self._state == "FINISHED" and isinstance(self._exception, Cancelled)

    def __repr__(self) -> str:
        return f"<CallFuture id={self.id} method={self.method!r} state={self._state}>"


class _Condition(threading.Condition):
    """``threading.Condition(threading.Lock())``, made in a third of the time (its
    ``__init__`` probes the lock for methods a plain Lock does not have)."""

    def __init__(self) -> None:  # (not Condition.__init__: the same attributes, faster)
        lock = self._lock = threading.Lock()
        self.acquire = lock.acquire
        self.release = lock.release
        self._waiters = collections.deque()


class BlockingCall(CallRecord):
    """The sink of ``Worker.call()``: lighter than a Future, because its caller usually
    reads the reply itself and nobody else ever waits on it."""

    def __init__(self, call_id: int, method: str, streams: bool,
                 on_event: EventCallback | None = None):
        self._init_record(call_id, method, on_event, streams)
        self._finished = False
        self._exc: BaseException | None = None
        self._lock: threading.Lock | None = None

    def prepare_to_wait(self) -> None:
        """Called before the call is sent when another thread will deliver the reply."""
        self._lock = threading.Lock()
        self._lock.acquire()

    def _done(self, value: Any, run_time: float) -> None:
        self.run_time = run_time
        self._value = self._outcome(value)
        self._finished = True
        if self._lock is not None:
            self._lock.release()

    def _failed(self, exc: BaseException) -> None:
        self._exc = exc
        self._finished = True
        if self._lock is not None:
            self._lock.release()

    def result(self) -> Any:
        if not self._finished:
            if self._lock is None:
                raise RuntimeError(f"call {self.id} ended without a reply")  # a corral bug
            self._lock.acquire()
        if self._exc is not None:
            raise self._exc
        return self._value


class CallStream(CallRecord):
    """An iterator over a call's output: each chunk of a streaming method as it is
    produced, or the single result of any other method.

    With ``events=True`` it yields every message instead: ``Log``, ``Progress``, ``Metric``
    and ``Chunk`` as they arrive, then a final ``Done``. A failed call raises from
    ``next()``.
    """

    def __init__(self, call_id: int, method: str, streams: bool,
                 on_event: EventCallback | None = None, events: bool = False):
        self._init_record(call_id, method, on_event)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._streams = streams
        self._yield_events = events
        self._finished = False  # the reader is done with it
        self._complete = False  # the call ended

    def _event(self, event: Any) -> None:
        self._record(event)
        self._notify(event)
        if self._yield_events:
            self._queue.put(event)

    def _chunk(self, value: Any) -> None:
        self._queue.put(m.Chunk(self.id, value) if self._yield_events else value)

    def _done(self, value: Any, run_time: float) -> None:
        self.run_time = run_time
        self._complete = True
        if self._yield_events:
            self._queue.put(m.Done(self.id, value, run_time))
        elif not self._streams:
            self._queue.put(value)
        self._queue.put(_END)

    def _failed(self, exc: BaseException) -> None:
        self._complete = True
        self._queue.put(_Raise(exc))

    def __iter__(self) -> "CallStream":
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if type(item) is _Raise:
            self._finished = True
            raise item.exc
        flow = self._flow
        if flow is not None and (not self._yield_events or type(item) is m.Chunk):
            flow.took()  # (credit for the worker to send another)
        return item

    @property
    def buffered(self) -> int:
        """Chunks (or events) received and not read yet: with flow control, at most the
        worker's ``stream_window`` chunks."""
        return self._queue.qsize()

    def __enter__(self) -> "CallStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading. A call still running is cancelled in the worker (see
        ``CallFuture.cancel``); nothing it still sends reaches anyone."""
        self._finished = True
        if not self._complete:
            self._cancel_with(self._cancel_error())

    def cancel(self) -> bool:
        """Cancel the call (also while it runs); the next ``next()`` raises Cancelled."""
        return not self._complete and self._cancel_with(self._cancel_error())

    def __repr__(self) -> str:
        return f"<CallStream id={self.id} method={self.method!r}>"


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class AsyncCallFuture(CallRecord, asyncio.Future):
    """The asyncio twin of CallFuture: await it for the result. Its event loop reads the
    replies itself when it can (``Connection.attach_loop``); messages read on another
    thread are handed to the loop."""

    def __init__(self, call_id: int, method: str, streams: bool,
                 on_event: EventCallback | None, loop: asyncio.AbstractEventLoop):
        asyncio.Future.__init__(self, loop=loop)
        self._init_record(call_id, method, on_event, streams)
        self._lead_loop = loop
        self._tid = threading.get_ident()  # the loop's thread (made by a running loop)

    _settle_callbacks: tuple[Callable[[Any], None], ...] = ()

    def add_settle_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(self)`` the moment the call settles (a result, an error or a
        cancellation), on the loop's thread, before anything awaiting it resumes; at once
        if it has settled. asyncio's ``add_done_callback`` runs a turn of the loop later:
        this is for bookkeeping that the awaiting code reads as soon as it resumes (the
        HTTP server finishes a prediction's record here, so its handler answers one loop
        iteration sooner and no task follows each call). ``fn`` must be quick; an error
        in it goes to the loop's exception handler, as a done callback's would."""
        if self.done():
            self._run_settle_callback(fn)
        else:
            self._settle_callbacks = (*self._settle_callbacks, fn)

    def _run_settle_callbacks(self) -> None:
        callbacks = self._settle_callbacks
        if callbacks:
            self._settle_callbacks = ()
            for fn in callbacks:
                self._run_settle_callback(fn)

    def _run_settle_callback(self, fn: Callable[[Any], None]) -> None:
        try:
            fn(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - as asyncio treats a failing done callback
            self.get_loop().call_exception_handler({
                "message": f"settle callback {fn!r} of {self!r} failed",
                "exception": exc, "future": self})

    def set_result(self, result: Any) -> None:
        asyncio.Future.set_result(self, result)
        if self._settle_callbacks:
            self._run_settle_callbacks()

    def set_exception(self, exception: Any) -> None:
        asyncio.Future.set_exception(self, exception)
        if self._settle_callbacks:
            self._run_settle_callbacks()

    def _event(self, event: Any) -> None:
        self._record(event)
        if self._on_event is not None:
            if threading.get_ident() == self._tid:
                self._notify(event)
            else:
                self.get_loop().call_soon_threadsafe(self._notify, event)

    def _done(self, value: Any, run_time: float) -> None:
        self.run_time = run_time
        result = self._chunks if self._chunks is not None else value  # (_outcome)
        if threading.get_ident() == self._tid:
            if not self.done():  # (_settle, inline: every reply the loop reads ends here)
                self.set_result(result)
        else:
            self.get_loop().call_soon_threadsafe(self._handed, result, None)

    def _failed(self, exc: BaseException) -> None:
        if threading.get_ident() == self._tid:
            self._settle(None, exc)
        else:
            self.get_loop().call_soon_threadsafe(self._handed, None, exc)

    def _handed(self, result: Any, exc: BaseException | None) -> None:
        self._settle(result, exc)
        attach = getattr(self._owner, "attach_loop", None)
        if attach is not None:  # (the loop read no more: someone else took the socket)
            attach(self.get_loop())

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the call, also in the worker; awaiting it raises asyncio.CancelledError
        (asyncio's own convention). A task awaiting the call that is cancelled cancels
        the call too."""
        if self.done():
            return False
        # Cancelled first: stopping the call settles it with corral's Cancelled on this
        # thread, and then this future would not read as cancelled (cancel() was False).
        super().cancel(msg)
        self._cancel_with(self._cancel_error())
        self._run_settle_callbacks()
        return True

    def _settle(self, result: Any, exc: BaseException | None) -> None:
        if self.done():
            return
        if exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(result)

    # -- a coroutine as well ----------------------------------------------------------------
    # ``acall()`` hands out the call's future itself, because asyncio.gather, wait_for,
    # shield and wait take a future as it is, where they wrap a coroutine in a Task of its
    # own (a fifth of the host's CPU per call in a gather). These three methods make it a
    # coroutine too (``collections.abc.Coroutine``), so that what only takes a coroutine
    # (create_task, TaskGroup, run_coroutine_threadsafe) drives it as it would
    # ``async def f(): return await future``.

    def send(self, value: Any) -> Any:
        """One step of the coroutine: the future to wait on, then the result."""
        if not self.done():
            self._asyncio_future_blocking = True
            return self
        raise StopIteration(self.result())

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """An exception thrown into the coroutine (its Task cancelled before the first
        step, or the call's own error handed back by the Task): a call still running is
        cancelled, since nothing awaits it any more; the exception is raised."""
        exc = typ if val is None else val
        if isinstance(exc, type):
            exc = exc()
        if tb is not None:
            exc = exc.with_traceback(tb)
        if not self.done():
            self.cancel()
        raise exc

    def close(self) -> None:
        """Close the coroutine: a call still running is cancelled."""
        if not self.done():
            self.cancel()


class AsyncCallStream(CallRecord):
    """The asyncio twin of CallStream: ``async for chunk in stream``."""

    def __init__(self, call_id: int, method: str, streams: bool,
                 on_event: EventCallback | None, loop: asyncio.AbstractEventLoop,
                 events: bool = False):
        self._init_record(call_id, method, on_event)
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._inner = CallStream(call_id, method, streams, None, events)
        self._finished = False

    def _deliver(self) -> None:
        # Move whatever the sync stream queued into the asyncio queue, on the loop.
        q = self._inner._queue
        while True:
            try:
                self._queue.put_nowait(q.get_nowait())
            except queue.Empty:
                return

    def _event(self, event: Any) -> None:
        self._record(event)
        self._inner._event(event)
        if self._on_event is not None:
            self._loop.call_soon_threadsafe(self._notify, event)
        self._loop.call_soon_threadsafe(self._deliver)

    def _chunk(self, value: Any) -> None:
        self._inner._chunk(value)
        self._loop.call_soon_threadsafe(self._deliver)

    def _done(self, value: Any, run_time: float) -> None:
        self.run_time = run_time
        self._inner._done(value, run_time)
        self._loop.call_soon_threadsafe(self._deliver)

    def _failed(self, exc: BaseException) -> None:
        self._inner._failed(exc)
        self._loop.call_soon_threadsafe(self._deliver)

    def __aiter__(self) -> "AsyncCallStream":
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            # The task reading this stream was cancelled: so is the call.
            await self.aclose()
            raise
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if type(item) is _Raise:
            self._finished = True
            raise item.exc
        flow = self._flow
        if flow is not None and (not self._inner._yield_events or type(item) is m.Chunk):
            flow.took()
        return item

    @property
    def buffered(self) -> int:
        """Chunks (or events) received and not read yet (see ``CallStream.buffered``)."""
        return self._queue.qsize() + self._inner._queue.qsize()

    async def aclose(self) -> None:
        """Stop reading; a call still running is cancelled in the worker."""
        self._finished = True
        if not self._inner._complete:
            self._cancel_with(self._cancel_error())

    def cancel(self) -> bool:
        return not self._inner._complete and self._cancel_with(self._cancel_error())

    async def __aenter__(self) -> "AsyncCallStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
