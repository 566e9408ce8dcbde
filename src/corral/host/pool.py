"""``Pool``: several Workers of one target behind the Worker's call surface.

::

    caller ──submit()──► room on a ready worker? ──yes──► Worker.submit() (the caller's thread)
                              │ no                              │
                              ▼                                 ▼ the worker's future ends
                      pool queue (FIFO, ≤ max_queue)     done callback: count the slot free,
                              ▲                          finish the caller's PoolFuture, or
                              │ dispatcher thread ◄──────  put the call back (retry); wake ─┘
                              └── sends queued calls as slots free up or workers come back

**Dispatch.** A call goes to the ready worker with the lowest load, if that load is below
its ``slots + prefetch`` (``prefetch``, default 1, is how many calls a worker holds beyond
its slots, so its socket always has the next one: it is also the Workers' own
``prefetch``). Ties go to the first worker in order. The load of a worker is the larger of
the calls the pool has handed it and not seen finish (counted under the pool's lock, so two
threads can never both take a worker's last slot) and ``Worker.load`` (which also sees
streams, and calls cancelled in flight that have not stopped yet). Workers that are not
``ready`` (restarting, recycling, failed) get nothing; neither does a worker whose process
just crashed and that has not noticed yet.

**Queue.** When no worker has room the call waits in the pool's own FIFO queue, at most
``max_queue`` calls (``QueueFull`` at submit when full; ``max_queue=0``: no queue at all).
Queued calls are sent by one dispatcher thread, woken when a call ends. Completion
callbacks never send calls themselves, because a worker may complete a future while it
holds its own locks (``Worker.stop()`` fails what is left under its lifecycle lock, which a
restart takes after the worker's gate): sending from there could deadlock. The dispatcher also re-checks, with a
back-off from 2 to 50 ms, while calls wait and nothing it is told about can free a slot (a
worker restarting, a stream ending). A call's ``timeout`` counts from ``submit()``: time
spent in the queue is part of it, and a call still queued at its deadline fails with
CallTimeout without ever reaching a worker.

**Crashes.** A crash fails only the calls on that worker (``WorkerCrashed``); the Worker
restarts itself, and the pool sends it calls again once it is ready. A call that never
reached the crashed process (it was refused by the broken connection, or waited for a
restart that gave up with WorkerUnavailable) goes back to the head of the queue: it never
ran, so it is safe to send again, idempotent or not (this reads the worker future's
``sent`` flag, which the connection sets when the Call goes on the wire). A call that was in flight is retried,
once, only when the caller marked it ``options(idempotent=True)``; it is preferably sent to
another worker. Nothing else is retried: not user errors (RemoteError), Cancelled,
CallTimeout, nor ProtocolError (the call's own result may be what broke the protocol, and a
retry would take a second worker down with it). When every worker has failed for good,
new calls raise WorkerUnavailable and queued calls fail with it; failed workers are not
replaced.

**Futures.** ``submit()`` returns a ``PoolFuture``: a ``concurrent.futures.Future`` whose
``cancel()`` takes a queued call out of the queue, or cancels a dispatched one through the
worker's future (also while it runs); ``result()`` then raises ``corral.Cancelled``. Its
``events``, ``logs``, ``metrics``, ``progress`` and ``run_time`` are those of the call's
last attempt; ``on_event`` callbacks are handed to the worker as they are, so a retried
call reports the events of both attempts. ``sent`` and ``add_sent_callback(fn)`` say when a
queued call leaves the queue for a worker (the HTTP server's "starting" to "processing").
``asubmit()`` returns an asyncio future fed from
the PoolFuture with ``call_soon_threadsafe``: nothing blocks the event loop.

**Streams** (``stream``, ``watch`` and their async twins) are not queued: they go at once
to the least-loaded ready worker (or one that is restarting, where they wait for it) and
are never retried, since their chunks have already been handed out. ``map`` and
``starmap`` keep twice as many calls in flight as all workers have room for (so the queue
has the next ones ready when a slot frees) and yield the results in order; abandoning the
iterator, or a failed call, cancels the calls still queued (calls already running finish,
like ``Executor.map``).

**Life cycle.** ``start()`` starts the workers in parallel threads (the calling thread starts
one), so it takes as long as the slowest one; if one fails, the others are stopped and the
error is raised. ``stop()`` drains: no new calls, queued calls are still sent and
everything in flight may finish within ``grace`` seconds; then the workers stop in
parallel. What is left fails: running calls with WorkerStopped, queued ones with
InvalidState.

Callbacks (``on_event``, the done callbacks of a PoolFuture) run on corral threads: a
blocking pool call from one raises RuntimeError (it could wait for the very thread it runs
on), and ``submit()`` from one hands the call to the dispatcher thread instead of sending
it itself.

**Cost.** ``Pool.call()`` is ``submit().result()``: the reply reaches the caller through
one thread hand-off (the worker's reader thread completes the future), like
``Worker.submit().result()``, not the hand-off-free ``Worker.call()`` that reads its own
reply. Keeping one path keeps one set of rules for retries and cancellation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

import msgspec

from ..exceptions import (
    CallTimeout,
    Cancelled,
    InvalidState,
    QueueFull,
    WorkerCrashed,
    WorkerUnavailable,
)
from . import policy
from .caller import CallKind, CallOptions, CallSurface, EventCallback, Usage
from .calls import AsyncCallFuture, CallFuture
from .timers import timers
from .worker import Health, Stats, Worker

log = logging.getLogger("corral")

#: Seconds between the dispatcher's checks for room while calls wait and no call ends.
POLL_MIN = 0.002
POLL_MAX = 0.05
#: Seconds a worker whose process crashed is passed over while it still looks ready.
SUSPECT_FOR = 1.0

# Calls made from a corral callback (on_event, a PoolFuture's done callbacks) on this thread.
_local = threading.local()


def _in_callback() -> bool:
    return getattr(_local, "depth", 0) > 0


class _Guard:
    """Marks the current thread as running caller callbacks."""

    __slots__ = ()

    def __enter__(self) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1

    def __exit__(self, *exc: Any) -> None:
        _local.depth -= 1


_guard = _Guard()


class PoolHealth(msgspec.Struct):
    """What ``Pool.health()`` reports.

    ``status``: new, starting, ready (every worker ready), busy (every slot busy), degraded
    (some workers restarting or failed, at least one usable), failed (none usable),
    stopping or stopped. ``workers`` holds each worker's ``Health``; ``ready`` counts the
    workers that take calls, ``busy`` and ``slots`` add up theirs, ``queued`` is the pool's
    queue and ``restarts`` the workers' restarts after crashes.
    """

    status: str
    workers: list[Health]
    ready: int
    busy: int
    slots: int
    queued: int
    restarts: int


class PoolStats(msgspec.Struct):
    """What ``Pool.stats()`` reports (no round trip). ``workers`` holds each worker's
    ``Stats``; ``queued`` is the pool's queue, ``in_flight`` the calls handed to workers and
    not finished, ``calls_served`` the workers' finished calls (their current processes),
    ``retries`` the idempotent calls sent again after a crash, ``requeued`` the calls put
    back because they never reached a worker that went down, ``rejected`` the QueueFull
    refusals, ``restarts`` and ``recycles`` the workers'."""

    workers: list[Stats]
    queued: int
    in_flight: int
    calls_served: int
    retries: int
    requeued: int
    rejected: int
    restarts: int
    recycles: int


def _has_streamed(call: "_Call") -> bool:
    """Whether the call has a streamed argument (an iterator: host/instream.py)."""
    from .instream import is_streamed

    return any(map(is_streamed, call.args)) or any(map(is_streamed, call.kwargs.values()))


class _Call:
    """One pool call, from submit() to its end, across attempts."""

    __slots__ = ("id", "method", "args", "kwargs", "opts", "deadline", "timeout", "future",
                 "state", "inner", "worker", "attempts", "retries", "avoid", "timer",
                 "cancelling", "on_sent")

    def __init__(self, call_id: int, method: str, args: tuple, kwargs: dict, opts: Any,
                 timeout: float | None):
        self.id = call_id
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.opts = opts
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout is not None else None
        self.future: PoolFuture = PoolFuture(self)
        self.state = "new"  # queued, dispatching, sent, done
        self.inner: Any = None  # the worker's CallFuture of the latest attempt
        self.worker: int | None = None  # index of the worker of the latest attempt
        self.attempts = 0
        self.retries = 0  # idempotent retries after a crash
        self.avoid: int | None = None  # the worker it crashed on (a preference)
        self.timer: Any = None  # its deadline while queued
        self.cancelling = False
        self.on_sent: list[Callable[[], None]] | None = None  # PoolFuture.add_sent_callback


class _Ended:
    """A finished ``_Call`` as its future goes on showing it."""

    __slots__ = ("id", "method", "attempts", "worker", "inner", "state", "on_sent")

    def __init__(self, call: _Call):
        self.id, self.method, self.attempts = call.id, call.method, call.attempts
        self.worker, self.inner = call.worker, call.inner
        self.state = "done"
        self.on_sent: list[Callable[[], None]] | None = None  # (never called: it ended)


class PoolFuture(CallFuture):
    """A ``concurrent.futures.Future`` for one pool call: a ``CallFuture`` (the worker
    futures' family) across attempts.

    ``cancel()`` works while the call waits in the pool's queue and while it runs (the
    worker stops it); ``result()`` then raises ``corral.Cancelled``. The call's events
    (``events``, ``logs``, ``metrics``, ``progress``, ``run_time``) are those of its latest
    attempt; ``worker`` is the Worker that ran it (None while queued) and ``attempts`` how
    many times it was sent.
    """

    def __init__(self, call: _Call):
        # Future.__init__, with a plain Lock under the Condition (Future never re-enters it;
        # an RLock is measurably dearer), like CallFuture.
        self._condition = threading.Condition(threading.Lock())
        self._state = "PENDING"
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []
        self._call = call
        self._pool: Pool | None = None

    @property
    def id(self) -> int:
        return self._call.id

    @property
    def method(self) -> str:
        return self._call.method

    @property
    def attempts(self) -> int:
        return self._call.attempts

    @property
    def sent(self) -> bool:
        """True once the call has left the pool's queue for a worker (it may be running,
        or held by the worker as its prefetched next call)."""
        return self._call.attempts > 0

    @property
    def queued(self) -> bool:
        """True while the call waits in the pool's own queue."""
        return self._call.attempts == 0

    def add_sent_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once, when the call is first sent to a worker (at once, on this
        thread, if it already was); on a corral thread otherwise: keep it quick. A call
        that ends in the queue (cancelled, timed out) never calls it."""
        call = self._call
        pool = self._pool
        if pool is not None:
            with pool._lock:
                if call.attempts == 0:
                    if call.on_sent is None:
                        call.on_sent = []
                    call.on_sent.append(fn)
                    return
        fn()

    @property
    def worker(self) -> Any:
        index = self._call.worker
        return None if index is None or self._pool is None else self._pool._workers[index]

    @property
    def events(self) -> list:
        inner = self._call.inner
        return inner.events if inner is not None else []

    @property
    def logs(self) -> list[str]:
        inner = self._call.inner
        return inner.logs if inner is not None else []

    @property
    def metrics(self) -> dict[str, Any]:
        inner = self._call.inner
        return inner.metrics if inner is not None else {}

    @property
    def progress(self) -> Any:
        inner = self._call.inner
        return inner.progress if inner is not None else None

    @property
    def run_time(self) -> float | None:
        inner = self._call.inner
        return inner.run_time if inner is not None else None

    def cancel(self) -> bool:
        """Cancel the call: take it out of the queue, or stop it in its worker. False if it
        already finished."""
        if self.done():
            return self.cancelled()
        pool = self._pool
        if pool is not None:
            pool._cancel(self._call)
        return self.cancelled()

    def _settle(self, value: Any = None, exc: BaseException | None = None) -> bool:
        """Finish with a result or an error; False if it had finished already."""
        try:
            with _guard:  # the caller's done callbacks run here
                if exc is not None:
                    self.set_exception(exc)
                else:
                    self.set_result(value)
        except concurrent.futures.InvalidStateError:
            return False
        # What the properties read from here on, without the call itself: the call refers
        # to this future, and the two would stay a cycle for the collector.
        self._call = _Ended(self._call)
        return True

    def __repr__(self) -> str:
        return f"<PoolFuture id={self.id} method={self.method!r} state={self._state}>"


class AsyncPoolFuture(AsyncCallFuture):
    """The asyncio twin of PoolFuture (what ``Pool.asubmit()`` returns), an
    ``AsyncCallFuture``: await it for the result. Cancelling it (or the task awaiting it)
    cancels the call; awaiting a cancelled call raises asyncio.CancelledError. ``events``
    and the rest are the PoolFuture's."""

    def __init__(self, source: PoolFuture, loop: asyncio.AbstractEventLoop):
        asyncio.Future.__init__(self, loop=loop)
        self.source = source
        source.add_done_callback(self._from_source)

    def _from_source(self, source: PoolFuture) -> None:
        try:
            self.get_loop().call_soon_threadsafe(self._copy)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits this any more

    def _copy(self) -> None:
        if self.done():
            return
        source = self.source
        if source.cancelled():
            asyncio.Future.cancel(self)
            self._run_settle_callbacks()
            return
        exc = source.exception()
        if exc is not None:
            self.set_exception(exc)
        else:
            self.set_result(source.result())

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self.source.cancel()
        cancelled = asyncio.Future.cancel(self, msg)
        self._run_settle_callbacks()
        return cancelled

    def add_sent_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the call has left the pool's queue (see PoolFuture)."""
        self.source.add_sent_callback(fn)

    id = property(lambda self: self.source.id)
    method = property(lambda self: self.source.method)
    worker = property(lambda self: self.source.worker)
    attempts = property(lambda self: self.source.attempts)
    events = property(lambda self: self.source.events)
    logs = property(lambda self: self.source.logs)
    metrics = property(lambda self: self.source.metrics)
    progress = property(lambda self: self.source.progress)
    run_time = property(lambda self: self.source.run_time)
    sent = property(lambda self: self.source.sent)
    queued = property(lambda self: self.source.queued)


class Pool(CallSurface):
    """Run ``target`` in ``workers`` processes and spread calls across them.

    Every other keyword argument (``config``, ``slots``, ``restart``, ``timeout``,
    ``max_calls``...) goes to each ``Worker``. A call goes to the ready worker with the
    fewest calls, as long as it has fewer than ``slots + prefetch``; otherwise it waits in
    the pool's queue (at most ``max_queue`` calls, then ``QueueFull``). A crashed worker
    fails only its own calls and restarts; a call marked ``options(idempotent=True)`` that
    was running there is retried once on another worker. ``timeout`` also bounds the time
    a call waits in the queue. The module docstring (``corral.host.pool``) tells the
    details.

    The call surface is the Worker's (``CallSurface``): ``call``, ``predict``, ``submit``,
    ``stream``, ``watch``, ``map``, ``starmap``, ``acall``, ``asubmit``, ``astream``,
    ``awatch`` and ``options(context=, on_event=, timeout=, idempotent=)``. Each worker is
    made by ``runner(target, prefetch=prefetch, **worker_kwargs)`` (default ``Worker``):
    any ``Runner`` works, a remote or Ray worker, or the tests' ``FakeRunner``::

        with corral.Pool("model.py:Model", workers=4, slots=2) as pool:
            pool.predict(x)
            futures = [pool.submit("predict", x) for x in xs]
            results = list(pool.map("predict", xs))
            pool.options(idempotent=True).call("embed", text)
    """

    def __init__(self, target: Any, *, workers: int = 2, max_queue: int = 1000,
                 prefetch: int = 1, runner: Callable[..., Any] | None = None,
                 **worker_kwargs: Any):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, not {workers!r}")
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 0:
            raise ValueError(f"max_queue must be an int >= 0, not {max_queue!r}")
        CallSurface.__init__(self)
        make = runner if runner is not None else Worker
        self._workers = [make(target, prefetch=prefetch, **worker_kwargs)
                         for _ in range(workers)]
        first = self._workers[0]
        self.target_name = first.target_name
        self.max_queue = max_queue
        self.prefetch = prefetch
        self.default_timeout = first.default_timeout
        self._room = [w.slots + prefetch for w in self._workers]
        self._handed = [0] * workers  # calls handed to each worker, not seen finish
        self._suspect: list[tuple[int | None, float] | None] = [None] * workers
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)  # the dispatcher waits here
        self._drained = threading.Condition(self._lock)  # the queue became empty
        self._queue: deque[_Call] = deque()
        self._queued = 0  # live calls in _queue (cancelled ones are skipped lazily)
        # Calls made from a callback with a worker picked, for the dispatcher to send.
        self._handoff: deque[tuple[_Call, int]] = deque()
        self._sending = 0  # calls with a worker picked, not handed to it yet (or put back)
        self._ids = itertools.count(1)
        self._state = "new"
        # False once stop() took what was left of the queue: no call may join it again.
        self._queue_open = True
        self._lifecycle = threading.RLock()
        self._dispatcher: threading.Thread | None = None
        self._retries = 0
        self._requeued = 0
        self._rejected = 0

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def workers(self) -> tuple[Worker, ...]:
        """The pool's Workers, in dispatch order (for introspection: their ``pid``,
        ``state``, ``crashes``)."""
        return tuple(self._workers)

    @property
    def slots(self) -> int:
        """Slots of all workers together."""
        return sum(w.slots for w in self._workers)

    @property
    def methods(self) -> dict[str, Any]:
        """The target's methods (its workers all host the same target)."""
        return self._workers[0].methods

    @property
    def capacity(self) -> int:
        """Calls it takes, running and queued, before QueueFull: slots + max_queue."""
        return self.slots + self.max_queue

    @property
    def pid(self) -> None:
        """None: a pool has a process per worker (``workers[i].pid``)."""
        return None

    @property
    def crashes(self) -> list[Any]:
        """Every worker's crashes, oldest first."""
        return sorted((c for w in self._workers for c in w.crashes), key=lambda c: c.at)

    def usage(self) -> Usage:
        """Busy slots, waiting calls (the pool's queue and its workers') and restarts."""
        stats = self.stats()
        return Usage(sum(w.busy for w in stats.workers),
                     stats.queued + sum(w.queued for w in stats.workers), self.slots,
                     stats.restarts, self.ready)

    def reload(self, config: dict[str, Any] | None = None) -> None:
        """``reload(config)`` every worker, one after the other (the others keep serving);
        the first failure is raised (see ``Worker.reload``)."""
        for worker in self._workers:
            worker.reload(config)

    @property
    def state(self) -> str:
        """new, starting, ready, stopping, stopped, or failed (every worker failed, or
        start() failed)."""
        state = self._state
        if state == "ready" and self._none_left():
            return "failed"
        return state

    @property
    def ready(self) -> int:
        """How many workers take calls right now."""
        return sum(1 for w in self._workers if w.state == "ready")

    @property
    def load(self) -> int:
        """Calls handed to workers and not finished, plus the calls in the queue."""
        with self._lock:
            return sum(self._load(i) for i in range(len(self._workers))) + self._queued

    def start(self) -> "Pool":
        """Start every worker (in parallel) and wait until all are ready. If one fails, the
        others are stopped and its error (SetupError, WorkerStartupError) is raised."""
        with self._lifecycle:
            if self._state != "new":
                raise InvalidState(f"start() on a pool that is {self._state}; "
                                   "make a new Pool to start again")
            self._state = "starting"
            errors: list[BaseException | None] = [None] * len(self._workers)

            def start(i: int) -> None:
                try:
                    self._workers[i].start()
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors[i] = exc

            threads = [threading.Thread(target=start, args=(i,), daemon=True,
                                        name=f"corral-pool-start-{i}")
                       for i in range(1, len(self._workers))]
            for t in threads:
                t.start()
            start(0)  # this thread starts one itself
            for t in threads:
                t.join()
            error = next((e for e in errors if e is not None), None)
            if error is not None:
                self._stop_workers(5.0)
                self._state = "failed"
                raise error
            self._dispatcher = threading.Thread(target=self._dispatch_loop, daemon=True,
                                                name="corral-pool-dispatch")
            self._dispatcher.start()
            self._state = "ready"
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop the pool, draining it: new calls are refused (InvalidState), queued calls are
        still sent, and calls may finish within ``grace`` seconds; then every worker stops
        (in parallel, with what is left of ``grace``). Calls still running then fail with
        WorkerStopped, calls still queued with InvalidState. Idempotent."""
        with self._lifecycle:
            if self._state in ("new", "stopped", "failed"):
                self._state = "stopped"
                return
            deadline = time.monotonic() + grace
            with self._lock:
                self._state = "stopping"
                self._wakeup.notify()
                self._drained.wait_for(self._is_drained, max(0.0, deadline - time.monotonic()))
                self._queue_open = False
                left = self._take_queue()
                self._wakeup.notify()
            for call in left:
                self._fail(call, InvalidState("the pool was stopped before the call could be "
                                              "sent to a worker"))
            self._stop_workers(max(0.0, deadline - time.monotonic()))
            dispatcher = self._dispatcher
            if dispatcher is not None:
                dispatcher.join(5.0)
            self._state = "stopped"

    def _stop_workers(self, grace: float) -> None:
        threads = [threading.Thread(target=w.stop, args=(grace,), daemon=True,
                                    name=f"corral-pool-stop-{i}")
                   for i, w in enumerate(self._workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- calls ------------------------------------------------------------------------------

    def options(self, *, context: dict[str, Any] | None = None,
                on_event: EventCallback | None = None, timeout: float | None = None,
                idempotent: bool = False, convert: bool = False) -> CallOptions:
        """Call with options: ``pool.options(timeout=5, idempotent=True).call(...)``.

        ``context`` reaches the call as ``corral.current().context``; ``on_event`` gets
        each Log, Progress and Metric as it arrives (of every attempt); ``timeout``
        (seconds, queue time included) stops the call and raises CallTimeout;
        ``idempotent=True`` lets the pool run the call again on another worker if its
        worker crashes while running it; ``convert`` as for a Worker (CallOptions).
        """
        return CallSurface.options(self, context=context, on_event=on_event, timeout=timeout,
                                   idempotent=idempotent, convert=convert)

    def _wrap_on_event(self, on_event: EventCallback | None) -> EventCallback | None:
        return _guarded(on_event)

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind) -> Any:
        """Start one call (the Runner entry point; see ``host/caller.py``)."""
        self._check_callable(method)
        if kind.streams:
            return self._stream(kind, method, args, kwargs, options)
        blocking = kind is CallKind.CALL
        if blocking and _in_callback():
            raise RuntimeError("a blocking pool call cannot be made from a corral callback "
                               "(on_event, a future's done callback); use submit() there")
        timeout = self.timeout_for(options)
        call = _Call(next(self._ids), method, args, kwargs, options, timeout)
        call.future._pool = self
        self._admit(call)
        if kind is CallKind.ASUBMIT:
            return AsyncPoolFuture(call.future, asyncio.get_running_loop())
        if not blocking:
            return call.future
        try:
            return call.future.result()
        finally:
            if not call.future.done():  # interrupted (KeyboardInterrupt): stop the call
                call.future.cancel()

    def _check_callable(self, method: str) -> None:
        state = self._state
        if state != "ready":
            if state == "new":
                raise InvalidState("the pool is not started: call start() or use it as a "
                                   "context manager")
            raise InvalidState(f"the pool is {state}; no more calls can be made")
        self.method_info(method)
        if self._none_left():
            raise self._unavailable()

    def _none_left(self) -> bool:
        """No worker will take a call again: each failed for good (or was stopped by hand)."""
        return all(w.state in ("failed", "stopped") for w in self._workers)

    def _unavailable(self) -> WorkerUnavailable:
        reasons = "; ".join(w.health().detail for w in self._workers if w.state == "failed")
        return WorkerUnavailable(f"every worker of the pool ({self.target_name}) has failed: "
                                 f"{reasons}", self.crashes)

    def _admit(self, call: _Call) -> None:
        """Send ``call`` now from this thread if a worker has room and nothing waits before
        it; else queue it (or raise QueueFull)."""
        index = None
        with self._lock:
            if self._state != "ready":  # (stop() began since _check_callable)
                raise InvalidState(f"the pool is {self._state}; no more calls can be made")
            if self._queued == 0:
                index = self._pick(call)
            if index is None:
                if self._queued >= self.max_queue:
                    self._rejected += 1
                    raise QueueFull(
                        f"the pool's queue is full: {self._queued} calls wait already "
                        f"(max_queue={self.max_queue}); call {call.id} ({call.method}) was "
                        "refused")
                self._enqueue(call)
                return
            call.state = "dispatching"
            self._sending += 1
            if _in_callback():  # maybe under a worker's locks: the dispatcher sends it
                self._handoff.append((call, index))
                self._wakeup.notify()
                return
        self._send(call, index, inline=True)

    def _stream(self, kind: CallKind, method: str, args: tuple, kwargs: dict,
                opts: CallOptions) -> Any:
        """Streams go at once to the least-loaded ready worker (or one restarting, where
        they wait for it); they are never queued nor retried."""
        with self._lock:
            usable = [i for i, w in enumerate(self._workers) if w.state == "ready"] or \
                [i for i, w in enumerate(self._workers) if w.state == "restarting"]
            if not usable:
                raise self._unavailable()
            index = min(usable, key=self._load)
        worker = self._workers[index]
        wopts = CallOptions(worker, opts.context, opts.on_event, self.timeout_for(opts),
                            convert=opts.convert)
        return worker.dispatch(method, args, kwargs, wopts, kind)

    def dispatch_map(self, method: str, items: Any, options: CallOptions) -> Any:
        """Submit ``method(*args)`` for each item, keeping twice as many calls in flight as
        the workers have room for; yield the results in order. Abandoned early, it cancels the
        calls still queued (those already running finish)."""
        if _in_callback():
            raise RuntimeError("a blocking pool call cannot be made from a corral callback")
        # the pool's queue holds the next ones ready
        yield from self._map_by_submit(method, items, options, self.map_window())

    def map_window(self) -> int:
        return 2 * sum(self._room)

    def _abandon(self, future: Any) -> None:
        self._cancel(future._call, queued_only=True)  # (calls already running finish)

    # -- dispatch (the lock is held where a method says so) ----------------------------------

    def _load(self, index: int) -> int:
        return max(self._handed[index], self._workers[index].load)

    def _pick(self, call: _Call) -> int | None:
        """The worker for ``call``, its place reserved; None if none has room (locked)."""
        workers = self._workers
        usable = [w.state == "ready" and not self._is_suspect(i, w)
                  for i, w in enumerate(workers)]
        best = policy.pick(usable, [self._load(i) for i in range(len(workers))], self._room,
                           call.avoid)
        if best is not None:
            self._handed[best] += 1
        return best

    def _is_suspect(self, index: int, worker: Any) -> bool:
        """Its process crashed a moment ago and it may not have noticed yet (locked)."""
        suspect = self._suspect[index]
        if suspect is None:
            return False
        pid, since = suspect
        if worker.pid == pid and time.monotonic() - since < SUSPECT_FOR:
            return True
        self._suspect[index] = None
        return False

    def _enqueue(self, call: _Call, front: bool = False) -> None:
        """Put ``call`` in the queue (locked) and wake the dispatcher."""
        call.state = "queued"
        if front:
            self._queue.appendleft(call)
        else:
            self._queue.append(call)
        self._queued += 1
        if call.deadline is not None:
            call.timer = timers.schedule(max(0.0, call.deadline - time.monotonic()),
                                         lambda: self._queue_timeout(call))
        self._wakeup.notify()

    def _dequeued(self, call: _Call) -> None:
        """``call`` leaves the queue (locked)."""
        self._queued -= 1
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if self._is_drained():
            self._drained.notify_all()

    def _is_drained(self) -> bool:
        """Every call is with a worker, or finished (locked)."""
        return self._queued == 0 and self._sending == 0

    def _take_queue(self) -> list[_Call]:
        """Empty the queue; return the live calls it held (locked)."""
        left = []
        while self._handoff:
            call, index = self._handoff.popleft()
            self._handed[index] -= 1
            self._sending -= 1
            left.append(call)
        while self._queue:
            call = self._queue.popleft()
            if call.state == "queued":
                call.state = "done"
                self._dequeued(call)
                left.append(call)
        return left

    def _dispatch_loop(self) -> None:
        """The dispatcher thread: send queued calls as workers have room."""
        interval = POLL_MIN
        while True:
            failed: list[_Call] = []
            with self._lock:
                while True:
                    if self._state == "stopped" or (self._state == "stopping"
                                                    and not self._queue_open):
                        return
                    batch = list(self._handoff)
                    self._handoff.clear()
                    batch += self._take_sendable()
                    if batch:
                        interval = POLL_MIN
                        break
                    if self._queued == 0:
                        self._wakeup.wait()
                        interval = POLL_MIN
                        continue
                    if self._none_left():
                        failed = self._take_queue()
                        break
                    self._wakeup.wait(interval)
                    interval = min(interval * 2, POLL_MAX)
            if failed:
                error = self._unavailable()
                for call in failed:
                    self._fail(call, error)
            for call, index in batch:
                self._send(call, index, inline=False)

    def _take_sendable(self) -> list[tuple[_Call, int]]:
        """Take queued calls, in order, while workers have room (locked)."""
        batch = []
        queue = self._queue
        while queue:
            call = queue[0]
            if call.state != "queued":  # cancelled or timed out while queued
                queue.popleft()
                continue
            index = self._pick(call)
            if index is None:
                break
            queue.popleft()
            call.state = "dispatching"
            self._sending += 1
            self._dequeued(call)
            batch.append((call, index))
        return batch

    def _send(self, call: _Call, index: int, inline: bool) -> None:
        """Hand ``call`` to worker ``index`` (its place already reserved; not locked).
        ``inline``: on the caller's thread, whose errors (an argument that cannot be sent)
        are raised there."""
        try:
            self._send_to(call, index, inline)
        finally:
            with self._lock:
                self._sending -= 1
                if self._is_drained():
                    self._drained.notify_all()

    def _send_to(self, call: _Call, index: int, inline: bool) -> None:
        if call.cancelling:  # cancelled on its way out of the queue
            self._release(index)
            return
        worker = self._workers[index]
        timeout = None
        if call.deadline is not None:
            timeout = call.deadline - time.monotonic()
            if timeout <= 0:
                self._release(index)
                self._fail(call, _queue_timeout_error(call))
                return
        opts = call.opts
        if opts.context is None and opts.on_event is None and timeout is None \
                and not opts.convert:
            wopts: CallOptions = worker  # a Worker is its own default options
        else:
            wopts = CallOptions(worker, opts.context, opts.on_event, timeout,
                                convert=opts.convert)
        pid = worker.pid
        try:
            inner = wopts.submit(call.method, *call.args, **call.kwargs)
        except InvalidState as exc:
            # It stopped being ready since it was picked (crashed, failed): try another.
            with self._lock:
                self._handed[index] -= 1
                self._suspect[index] = (pid, time.monotonic())
                requeued = self._requeue(call)
            if not requeued:
                self._fail(call, exc)
            return
        except BaseException as exc:
            self._release(index)
            if inline:
                call.state = "done"
                raise
            self._fail(call, exc)
            return
        with self._lock:
            call.inner = inner
            call.worker = index
            call.attempts += 1
            call.state = "sent"
            cancelling = call.cancelling
            on_sent, call.on_sent = call.on_sent, None
        if on_sent:
            for fn in on_sent:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a caller's callback must not stop the call
                    log.exception("a sent callback of call %s raised", call.id)
        if cancelling:
            inner.cancel()
        inner.add_done_callback(lambda inner: self._finished(call, index, pid, inner))

    def _release(self, index: int) -> None:
        with self._lock:
            self._handed[index] -= 1
            if self._queued:
                self._wakeup.notify()

    def _finished(self, call: _Call, index: int, pid: int | None, inner: Any) -> None:
        """The worker's future of ``call`` ended (on a corral thread, maybe under the
        worker's locks: this must never send a call itself)."""
        exc = inner.exception()
        retry = False
        idempotent = call.opts.idempotent
        if idempotent and exc is not None and _has_streamed(call):
            idempotent = False  # its iterator is partly consumed: it cannot be sent again
        with self._lock:
            self._handed[index] -= 1
            decision = policy.after_failure(exc, inner.sent, idempotent, call.retries)
            if isinstance(exc, WorkerCrashed) or decision is not policy.AfterFailure.FAIL:
                crashed = exc.pid if exc.pid is not None else pid
                if self._workers[index].pid == crashed:
                    self._suspect[index] = (crashed, time.monotonic())
            if decision is not policy.AfterFailure.FAIL:
                retry = self._retry(call, index, decision)
            if self._queued:
                self._wakeup.notify()
        if retry:
            return
        call.state = "done"
        if exc is None:
            call.future._settle(inner.result())
        else:
            call.future._settle(exc=exc)

    def _retry(self, call: _Call, index: int, decision: policy.AfterFailure) -> bool:
        """Put a call whose worker went down back in the queue, if that is safe (locked)."""
        call.avoid = index
        if not self._requeue(call):
            return False
        if decision is policy.AfterFailure.REQUEUE:
            self._requeued += 1
        else:
            call.retries += 1
            self._retries += 1
        return True

    def _requeue(self, call: _Call) -> bool:
        """Put a call that went out back at the head of the queue, unless the pool no
        longer takes it back or the caller gave up on it (locked)."""
        if not self._queue_open or call.cancelling or call.future.done() \
                or self._none_left():
            return False
        self._enqueue(call, front=True)
        return True

    # -- ending calls -----------------------------------------------------------------------

    def _fail(self, call: _Call, error: BaseException) -> None:
        call.state = "done"
        call.future._settle(exc=error)

    def _queue_timeout(self, call: _Call) -> None:
        """A queued call reached its deadline (on the timer thread)."""
        with self._lock:
            if call.state != "queued":
                return
            call.state = "done"
            call.timer = None
            self._dequeued(call)
        self._fail(call, _queue_timeout_error(call))

    def _cancel(self, call: _Call, queued_only: bool = False) -> None:
        """Cancel ``call`` where it is: in the queue, being sent, or in its worker."""
        inner = None
        with self._lock:
            if call.state == "queued":
                call.state = "done"
                self._dequeued(call)
            elif queued_only or call.state == "done":
                return
            else:  # dispatching (its sender cancels it once sent) or sent
                call.cancelling = True
                inner = call.inner if call.state == "sent" else None
        call.future._settle(exc=_cancelled(call))
        if inner is not None:
            inner.cancel()

    # -- introspection ----------------------------------------------------------------------

    def describe(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """The JSON Schemas of the target's methods (``Worker.describe``), from a ready
        worker (they all host the same target)."""
        for worker in self._workers:
            if worker.state == "ready":
                return worker.describe(timeout)
        raise self._unavailable() if self._state == "ready" else InvalidState(
            f"the pool is {self._state}")

    def health(self, timeout: float = 5.0) -> PoolHealth:
        """Every worker's ``health()`` (a ping each) and the pool's status."""
        healths = [w.health(timeout) for w in self._workers]
        usable = sum(1 for h in healths if h.status in ("ready", "busy"))
        busy = sum(h.busy for h in healths)
        slots = sum(h.slots for h in healths)
        state = self._state
        if state != "ready":
            status = state
        elif usable == 0:
            status = "failed" if any(h.status == "failed" for h in healths) else "degraded"
        elif usable < len(healths):
            status = "degraded"
        elif all(h.status == "busy" for h in healths):
            status = "busy"
        else:
            status = "ready"
        return PoolHealth(status, healths, usable, busy, slots, self._queued,
                          sum(h.restarts for h in healths))

    def stats(self) -> PoolStats:
        """Counters of the pool and its workers, read on the host (no round trip)."""
        stats = [w.stats() for w in self._workers]
        with self._lock:
            queued, in_flight = self._queued, sum(self._handed)
            retries, requeued, rejected = self._retries, self._requeued, self._rejected
        return PoolStats(stats, queued, in_flight, sum(s.calls_served for s in stats),
                         retries, requeued, rejected, sum(s.restarts for s in stats),
                         sum(s.recycles for s in stats))

    def __repr__(self) -> str:
        return (f"<corral.Pool {self.target_name} workers={len(self._workers)} "
                f"ready={self.ready} {self.state}>")


def _guarded(on_event: EventCallback | None) -> EventCallback | None:
    """``on_event``, marking its thread as running a callback (no blocking pool calls)."""
    if on_event is None:
        return None

    def guarded(event: Any) -> None:
        with _guard:
            on_event(event)

    guarded.__wrapped__ = on_event  # type: ignore[attr-defined]
    return guarded


def _cancelled(call: _Call) -> BaseException:
    return Cancelled(f"pool call {call.id} ({call.method}) was cancelled")


def _queue_timeout_error(call: _Call) -> CallTimeout:
    return CallTimeout(f"pool call {call.id} ({call.method}) did not start within its timeout "
                       f"of {call.timeout:g} s (it waited in the pool's queue)", call.timeout)
