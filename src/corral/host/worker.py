"""``Worker``: one isolated process hosting one target, called from the host.

The public Worker: its settings, the call path (``dispatch``, the pipelined ``map``), health,
stats, reload, describe and stop. Launching a process is ``host/launch.py``; supervising it
(crashes, restarts, recycling, the state machine and the lock order) is
``host/supervision.py``; the live workers are in ``host/registry.py``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any

import msgspec

from ..exceptions import (
    ArgumentError,
    CallTimeout,
    Cancelled,
    InvalidState,
    MethodNotFound,
    WorkerStopped,
    WorkerUnavailable,
    make_remote_error,
)
from ..protocol import messages as m
from ..protocol.framing import DEFAULT_MAX_FRAME
from ..protocol.shm import DEFAULT_THRESHOLD
from ..protocol.values import args_to_wire, to_wire
from . import registry, signals
from .caller import CallKind, CallOptions, CallSurface, Usage, check_positive
from .calls import AsyncCallFuture, AsyncCallStream, BlockingCall, CallFuture, CallStream
from .connection import Connection
from .flow import OutCredit
from .instream import Feed
from .launch import HELLO_TIMEOUT, LaunchSpec, describe_target, launch, setup_error, target_spec
from .process import WorkerProcess
from .supervision import (
    CALLABLE,
    FAILED,
    NEW,
    READY,
    RELOADING,
    RESTARTING,
    STARTING,
    STOPPED,
    STOPPING,
    Supervisor,
    WorkerState,
    _Deferred,
)
from .supervisor import Crash, CrashHistory, restart_policy
from .timers import timers

__all__ = ["Worker", "Health", "Stats", "CallOptions", "HELLO_TIMEOUT", "WorkerState"]

log = logging.getLogger("corral")

class Health(msgspec.Struct):
    """What ``Worker.health()`` reports. ``status`` is one of new, starting, ready, busy,
    reloading, restarting, stopping, stopped, failed; ``detail`` says why when restarting
    or failed; ``restarts`` counts the restarts after crashes so far."""

    status: str
    pid: int | None
    busy: int
    slots: int
    detail: str = ""
    restarts: int = 0


class Stats(msgspec.Struct):
    """What ``Worker.stats()`` reports; ``rss`` is in bytes, ``uptime`` in seconds."""

    pid: int | None
    rss: int | None
    calls_served: int
    busy: int
    queued: int
    slots: int
    uptime: float
    restarts: int = 0
    recycles: int = 0


def _blocking(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return BlockingCall(cid, method, streams, opts.on_event)


def _future(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return CallFuture(cid, method, streams, opts.on_event)


def _stream(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return CallStream(cid, method, streams, opts.on_event)


def _watch(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return CallStream(cid, method, streams, opts.on_event, events=True)


def _afuture(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return AsyncCallFuture(cid, method, streams, opts.on_event, asyncio.get_running_loop())


def _astream(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return AsyncCallStream(cid, method, streams, opts.on_event, asyncio.get_running_loop())


def _awatch(cid: int, method: str, streams: bool, opts: CallOptions) -> Any:
    return AsyncCallStream(cid, method, streams, opts.on_event, asyncio.get_running_loop(),
                           events=True)


#: What a call of each kind hands its caller (the sink its replies are delivered to).
_SINKS = {CallKind.CALL: _blocking, CallKind.SUBMIT: _future, CallKind.STREAM: _stream,
          CallKind.WATCH: _watch, CallKind.ASUBMIT: _afuture, CallKind.ASTREAM: _astream,
          CallKind.AWATCH: _awatch}


class Worker(Supervisor, CallSurface):
    """Run ``target`` in its own process and call it.

    ``target`` is a reference, ``"path/to/file.py:Name"`` or ``"package.module:Name"``, or a
    local class, instance or function (shipped with cloudpickle; same machine only). A class
    is instantiated once; then ``setup(**config)`` runs if the target has one. Every public
    method is callable; sync, async, generator and async generator methods all work, and
    generators stream.

    ``slots`` calls run at once (threads for sync methods, one event loop for async ones);
    more calls wait in order. ``python`` picks the interpreter (default: this one; corral must
    be importable there) and ``env`` adds environment variables. ``allow_pickle`` lets values
    that corral cannot encode natively cross as pickles (both sides trust each other).

    Supervision: a worker that crashes fails its calls in flight with WorkerCrashed and is
    restarted (setup runs again) by the ``restart`` policy (``corral.Restart``; ``False``
    never restarts); calls made meanwhile wait for it. ``timeout`` is the default deadline
    of every call (``options(timeout=)`` per call); a cancelled or timed-out call that does
    not stop within ``cancel_grace`` seconds costs the worker its life (it is restarted).
    ``max_calls`` and ``max_rss`` (bytes) replace the process after that many calls or when
    it grows beyond that: calls in flight finish, new ones wait, none fail.

    ``check_config`` checks ``config`` against ``setup()``'s type hints in the worker
    before the target is built (values are converted as ``options(convert=True)`` converts
    inputs); a config that does not fit raises SetupError with ``problems`` listing every
    unknown key, missing required value and wrong type, and in ``reload()`` leaves the
    running target as it was. ``check_config="only"`` checks and builds nothing: start()
    returns once the config fits, the worker has no methods, and you stop it (a
    pre-flight check that costs only the import of the target's module).

    Streams are flow-controlled both ways with a window of ``stream_window`` chunks: a
    ``stream()`` of a generator has at most that many chunks in flight or waiting on the
    host, so a slow reader slows the generator down; an argument given as an iterator,
    generator or async iterator is streamed to the worker chunk by chunk (the method
    receives an iterator), at most that many chunks ahead of the method (docs/streams.md).

    Use it as a context manager, or call ``start()`` and ``stop()``::

        with corral.Worker("examples/echo/echo.py:Echo") as w:
            w.call("echo", "hi")

    A Worker is a ``Runner`` (``host/caller.py``): Pool, the HTTP server and the plugin
    manager drive it through that interface only.
    """

    def __init__(self, target: Any, *, config: dict[str, Any] | None = None, slots: int = 1,
                 python: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, allow_pickle: bool = False, prefetch: int = 128,
                 max_frame: int = DEFAULT_MAX_FRAME, start_timeout: float | None = None,
                 oob_threshold: int = DEFAULT_THRESHOLD, restart: Any = True,
                 timeout: float | None = None, cancel_grace: float = 2.0,
                 max_calls: int | None = None, max_rss: int | None = None,
                 check_config: bool | str = False, stream_window: int = 32):
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, not {slots!r}")
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, not {prefetch!r}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        if config and not all(isinstance(k, str) for k in config):
            raise TypeError("config keys must be str (they become setup()'s keyword arguments)")
        check_positive("timeout", timeout)
        check_positive("cancel_grace", cancel_grace)
        check_positive("max_calls", max_calls, int)
        check_positive("max_rss", max_rss, int)
        check_positive("stream_window", stream_window, int)
        CallSurface.__init__(self)
        self.stream_window = stream_window
        self.target = target
        self.config = dict(config or {})
        self.slots = slots
        self.python = python
        self.env = dict(env or {})
        self.cwd = cwd
        self.allow_pickle = allow_pickle
        self.prefetch = prefetch
        self.max_frame = max_frame
        self.start_timeout = start_timeout
        if not isinstance(oob_threshold, int) or oob_threshold < 1:
            raise ValueError(f"oob_threshold must be an int >= 1, not {oob_threshold!r}")
        self.oob_threshold = oob_threshold
        self.restart = restart_policy(restart)
        self.default_timeout = timeout
        self.cancel_grace = cancel_grace
        self.max_calls = max_calls
        self.max_rss = max_rss
        if check_config not in (False, True, "only"):
            raise ValueError(f"check_config must be False, True or 'only', "
                             f"not {check_config!r}")
        self.check_config = check_config
        self.methods: dict[str, m.MethodInfo] = {}
        self.setup_logs: list[str] = []
        self.target_name = target if isinstance(target, str) else describe_target(target)
        self._state = NEW
        self._detail = ""
        self._failure: BaseException | None = None
        self._proc: WorkerProcess | None = None
        self._conn: Connection | None = None
        self._launching: WorkerProcess | None = None  # a restart's process, until ready
        self._retired: set[int] = set()  # pids ended on purpose (recycled, overdue)
        self._kill_reason: dict[int, str] = {}
        self._lifecycle = threading.RLock()
        self._gate = threading.Lock()  # held while a call is sent, and by reload()
        self._changed = threading.Condition(threading.Lock())  # the state left "restarting"
        self._ids = itertools.count(1)  # call ids, increasing across restarts
        self._deferred = _Deferred()
        self._history = CrashHistory(self.restart)
        self._recycles = 0
        self._rss_timer: Any = None
        self._started_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def crashes(self) -> list[Crash]:
        """The crashes seen so far (the latest ones), oldest first."""
        return list(self._history.crashes)

    @property
    def capacity(self) -> None:
        """A Worker never refuses a call for room (calls beyond its window wait on the
        host): None."""
        return None

    def start(self) -> "Worker":
        """Start the process, load the target and wait until it is ready.

        Raises SetupError when loading or ``setup()`` fails (with the setup logs), and
        WorkerStartupError when the process does not start or speaks another protocol.
        """
        with self._lifecycle:
            if self._state != NEW:
                raise InvalidState(f"start() on a worker that is {self._state}; "
                                   "make a new Worker to start again")
            self._state = STARTING
            try:
                proc, conn = self._launch()
            except BaseException as exc:
                self._fail(exc)
                raise
            self._install(proc, conn)
            self._state = READY
            registry.add(self)
            signals.install()  # drain calls in flight on SIGTERM/SIGINT (main thread only)
        return self

    def _launch(self) -> tuple[WorkerProcess, Connection]:
        """A new process, Ready (``launch.launch``); its methods become this Worker's."""
        spec = target_spec(self.target)
        settings = LaunchSpec(self.python, self.env, self.cwd, self.max_frame, self.slots,
                              self.prefetch, self.allow_pickle, self.oob_threshold,
                              self.cancel_grace, self.start_timeout, self.check_config)

        def spawned(proc: WorkerProcess) -> None:
            self._launching = proc

        def setup_failed(logs: list[str]) -> None:
            self.setup_logs = logs

        try:
            launched = launch(settings, spec, self.config, self.target_name,
                              on_broken=self._on_broken, make_error=self._make_error,
                              on_overdue=self._overdue, on_settled=self._cancels_settled,
                              on_spawned=spawned, on_setup_logs=setup_failed,
                              spawn=self._spawn_process)
        finally:
            self._launching = None
        ready = launched.ready
        self.methods = ready.methods
        self.setup_logs = ready.setup_logs
        self.target_name = ready.target
        self._started_at = time.monotonic()
        self.start_time = launched.start_time
        return launched.proc, launched.conn

    def kill_now(self) -> None:
        """Kill this worker's processes (the current one and a restart's) with their
        process groups: no lock, no wait, so safe in a signal handler. A process already
        reaped is skipped (its pid, and so its group id, may be another's by now)."""
        for proc in (self._proc, self._launching):
            if proc is not None and proc.poll() is None:
                proc.kill_group()

    def _spawn_process(self) -> WorkerProcess:
        """Start the OS process, before the handshake. A subclass may start it another way
        (corral.remote.pie forks it from a fork server) with the same interface."""
        return WorkerProcess(self.python, self.env, self.max_frame, self.cwd)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the worker: wait up to ``grace`` seconds for calls in flight, run the
        target's ``teardown()`` if it has one, end the process (SIGTERM, then SIGKILL) and
        release everything. Calls still running fail with WorkerStopped, calls waiting for
        a restart with InvalidState. Idempotent."""
        with self._lifecycle:
            if self._state in (NEW, STOPPED):
                self._state = STOPPED
                return
            was = self._state
            self._state = STOPPING
            if self._rss_timer is not None:
                self._rss_timer.cancel()
            self._deferred.fail_all(InvalidState("the worker was stopped before the call "
                                                 "could be sent"))
            launching = self._launching
            if launching is not None:
                launching.kill()  # a restart in progress ends here
            proc, conn = self._proc, self._conn
            if proc is not None and conn is not None:
                deadline = time.monotonic() + grace
                if was not in (FAILED, RESTARTING):
                    conn.wait_idle(grace)
                try:
                    conn.send_control(m.Shutdown(max(0.0, deadline - time.monotonic())))
                except OSError:
                    pass
                if proc.wait(max(0.0, deadline - time.monotonic()) + 2.0) is None:
                    proc.terminate(2.0)
                proc.kill_group()
                conn.close(WorkerStopped(
                    f"worker {proc.pid} was stopped before the call finished", pid=proc.pid))
                proc.close()
            self._state = STOPPED
            registry.discard(self)
        self._notify_changed()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and self._state not in (STOPPED, NEW):
            try:
                proc.kill()
                proc.close()
            except Exception:  # noqa: BLE001 - best effort during interpreter teardown
                pass

    def _make_error(self, sink: Any, info: m.ErrorInfo) -> BaseException:
        if info.kind == "arguments":
            meth = self.methods.get(sink.method)
            return ArgumentError(sink.method, meth.signature if meth else "(...)", info.message,
                                 info.problems)
        if info.kind == "method":
            return MethodNotFound(info.message, sorted(self.methods))
        if info.kind == "cancelled":
            return Cancelled(f"call {sink.id} ({sink.method}) was cancelled in the worker")
        return make_remote_error(info)

    # -- calls ------------------------------------------------------------------------------

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind, on_sink: Any = None) -> Any:
        """Start one call (the Runner entry point; see ``host/caller.py``). ``on_sink``, if
        given, gets the call's sink before it is sent (to cancel a blocking call from
        another thread: ``sink._cancel_with(sink._cancel_error())``)."""
        make = _SINKS[kind]
        blocking = kind is CallKind.CALL
        opts = options
        timeout = opts.timeout if opts.timeout is not None else self.default_timeout
        with self._gate:
            state, held = self._state, self._conn
            # Held back: while a restart is under way, and while a cancel is unresolved
            # (the worker may yet be killed for it).
            if held is not None and (state is RESTARTING
                                     or state is READY and held.cancels_pending):
                info = self.method_info(method)
                # Encoded for real once the process is ready; checked now, so that a value
                # that cannot be sent raises here as it would at any other time.
                try:
                    args_to_wire(args, kwargs, self.allow_pickle, None)
                except TypeError:
                    feed = Feed.split(args, kwargs, self.stream_window)
                    if feed is None:
                        raise
                    args_to_wire(feed.args, feed.kwargs, self.allow_pickle, None)
                if opts.context is not None:
                    to_wire(opts.context, allow_pickle=self.allow_pickle, where="context")
                sink = make(next(self._ids), method, info.streams, opts)
                if info.streams and kind.streams:
                    sink._flow = OutCredit(sink.id, self.stream_window)
                if on_sink is not None:
                    on_sink(sink)
                if blocking:
                    sink.prepare_to_wait()
                else:
                    sink.worker = self
                self._arm_deadline(sink, timeout)
                self._deferred.add(sink, method, args, kwargs, opts)
                if not blocking:
                    return sink
                leading = False
            else:
                # (the checks of _callable, inline for a ready worker and a known method)
                conn = held
                info = self.methods.get(method) if type(method) is str else None
                if info is None or conn is None or state not in CALLABLE:
                    conn, info = self._callable(method)
                call_id = next(self._ids)
                streams = info.streams
                window = self.stream_window if streams and kind.streams else 0
                feed = None
                try:
                    payload = conn.encode_call(call_id, method, args, kwargs, opts, window)
                except TypeError:  # (an iterator argument is not a value: it is streamed)
                    feed = Feed.split(args, kwargs, self.stream_window)
                    if feed is None:
                        raise
                    payload = conn.encode_call(call_id, method, feed.args, feed.kwargs, opts,
                                               window, feed.inputs)
                sink = make(call_id, method, streams, opts)
                if window:
                    sink._flow = OutCredit(call_id, window, conn)
                if on_sink is not None:
                    on_sink(sink)
                if not blocking:
                    sink.worker = self
                if timeout is not None:
                    self._arm_deadline(sink, timeout)
                if not blocking:
                    conn.submit(call_id, payload, sink)
                elif timeout is None:
                    # Registered under the gate, so that calls reach the worker in id order.
                    leading = conn.call_begin(call_id, payload, sink)
                else:  # a deadline must be able to end the wait: someone else reads
                    sink.prepare_to_wait()
                    conn.submit(call_id, payload, sink)
                    leading = False
                if feed is not None:
                    feed.start(conn, sink, self.allow_pickle)
                self._calls_left -= 1
                if self._calls_left == 0:  # (after registering: the recycle waits for it)
                    self._begin_recycle(f"max_calls={self.max_calls}")
                if not blocking:
                    return sink
        if leading:
            try:
                conn.lead(sink)  # outside the gate: it reads until the call ends
            except BaseException:
                # Interrupted (KeyboardInterrupt): the call must not run on unwatched.
                sink._cancel_with(sink._cancel_error())
                raise
        return sink.result()

    def _arm_deadline(self, sink: Any, timeout: float | None) -> None:
        if timeout is None:
            return
        error = functools.partial(_timeout_error, sink, timeout)
        sink._timer = timers.schedule(timeout, lambda: sink._cancel_with(error()))

    def _send_deferred(self, sink: Any, method: str, args: tuple, kwargs: dict,
                       opts: CallOptions) -> BaseException | None:
        """Send a call that waited (under _gate, with a ready connection); returns the
        error it must fail with instead, for the caller to deliver once it let go of the
        locks (a done callback may call this worker again)."""
        conn = self._conn
        assert conn is not None
        if method not in self.methods:  # the reloaded or restarted target lost it
            return MethodNotFound(method, sorted(self.methods))
        flow = sink._flow
        feed = Feed.split(args, kwargs, self.stream_window)
        if feed is not None:
            args, kwargs = feed.args, feed.kwargs
        try:
            payload = conn.encode_call(sink.id, method, args, kwargs, opts,
                                       flow.window if flow is not None else 0,
                                       feed.inputs if feed is not None else None)
        except Exception as exc:  # noqa: BLE001 - the caller's value, reported to the caller
            return exc
        if flow is not None:
            flow.bind(conn)
        refused = conn.submit_or_refuse(sink.id, payload, sink)
        if refused is None and feed is not None:
            feed.start(conn, sink, self.allow_pickle)
        return refused

    def dispatch_map(self, method: str, items: Any, options: CallOptions) -> Any:
        """Pipelined calls read on the calling thread: while the worker runs one call, the
        next ones are already in its socket, and the calls of a batch leave in one system
        call. A failed call raises from the iterator when its turn comes."""
        window = self.slots + self.prefetch
        pending: deque = deque()
        try:
            yield from self._map_loop(method, items, options, window, pending)
        finally:
            conn = self._conn
            if conn is not None:
                if pending:
                    conn._wake.set()  # abandoned early: let the reader collect the rest
                conn.flush_releases()  # what the last results' leases need

    def _map_loop(self, method: str, items: Any, opts: CallOptions, window: int,
                  pending: deque) -> Any:
        # Calls go out in batches once a quarter of the window is free (one system call for
        # several calls, which the worker then answers with one write), while the window
        # keeps at least the other three quarters in flight.
        low = window - max(1, min(window // 4, 32))
        exhausted = False
        while True:
            if self._state is RESTARTING and not pending:
                self._wait_while_restarting()
            if not exhausted and len(pending) <= low:
                batch, exhausted = self._map_fill(method, items, opts, window - len(pending))
                if batch is None:
                    if not pending:
                        continue  # it crashed again just now: wait for the restart
                else:
                    pending.extend(batch)
            if not pending:
                return
            head = pending[0]
            owner = head._owner  # its connection (an old one, if the worker restarted)
            if owner is not None:
                owner.read_until(head)
            pending.popleft()
            yield head.result()

    def _map_fill(self, method: str, items: Any, opts: CallOptions,
                  room: int) -> tuple[list | None, bool]:
        """Send up to ``room`` more calls of a map; returns their sinks (None: the worker
        is restarting) and whether ``items`` ran out."""
        batch = []
        exhausted = False
        with self._gate:
            if self._state is RESTARTING:
                return None, False
            conn, info = self._callable(method)
            while len(batch) < room:
                if self._calls_left == 0:
                    break
                try:
                    args = next(items)
                except StopIteration:
                    exhausted = True
                    break
                call_id = next(self._ids)
                # (the one encoder: the context goes through the value codec too)
                payload = conn.encode_call(call_id, method, tuple(args), {}, opts)
                self._calls_left -= 1
                sink = BlockingCall(call_id, method, info.streams, opts.on_event)
                sink.prepare_to_wait()
                batch.append((call_id, payload, sink))
            if batch:
                conn.submit_batch(batch)
            if self._calls_left == 0:
                self._begin_recycle(f"max_calls={self.max_calls}")
        return [sink for _, _, sink in batch], exhausted

    def _callable(self, method: str) -> tuple[Connection, m.MethodInfo]:
        """The connection and the method's info, or why no call can be made (under _gate)."""
        conn = self._conn
        if conn is None or self._state not in CALLABLE:
            if self._state is FAILED and isinstance(self._failure, WorkerUnavailable):
                raise self._failure
            raise InvalidState(self._not_callable()) from self._failure
        return conn, self.method_info(method)

    def _not_callable(self) -> str:
        if self._state is NEW:
            return "the worker is not started: call start() or use it as a context manager"
        if self._state is FAILED:
            return f"the worker failed ({self._detail}); no more calls can be made"
        return f"the worker is {self._state}; no more calls can be made"

    # -- introspection and control -------------------------------------------------------------

    def health(self, timeout: float = 5.0) -> Health:
        """The worker's state right now. When it is up, this asks the process itself
        (a ping over the control channel) and reports ``failed`` if it does not answer
        within ``timeout`` seconds."""
        state, conn = self._state, self._conn
        pid = self.pid
        restarts = self._history.restarts
        if state is not READY or conn is None:
            return Health(state.value, pid, 0, self.slots, self._detail, restarts)
        try:
            pong = conn.request(lambda seq: m.Ping(seq), (m.Pong,)).result(timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
            if self._state is not READY or self._conn is not conn:
                return Health(self._state.value, self.pid, 0, self.slots, self._detail,
                              self._history.restarts)
            return Health("failed", pid, 0, self.slots, f"no answer to a ping: {exc!r}",
                          restarts)
        busy = pong.busy
        return Health("busy" if busy >= self.slots else "ready", pid, busy, self.slots, "",
                      restarts)

    def stats(self) -> Stats:
        """Process and call counters, read on the host (no round trip)."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            return Stats(None, None, 0, 0, 0, self.slots, 0.0, self._history.restarts,
                         self._recycles)
        sent = conn.sent()
        alive = self._state in (READY, RELOADING, STOPPING)
        return Stats(
            pid=proc.pid,
            rss=proc.rss_bytes() if alive else None,
            calls_served=conn.completed,
            busy=min(sent, self.slots),
            queued=conn.in_flight() - min(sent, self.slots) + len(self._deferred),
            slots=self.slots,
            uptime=time.monotonic() - self._started_at if alive else 0.0,
            restarts=self._history.restarts,
            recycles=self._recycles,
        )

    @property
    def load(self) -> int:
        """Calls sent, queued or waiting for a restart that have not finished (cheap: for
        dispatching across workers)."""
        conn = self._conn
        return (conn.in_flight() if conn is not None else 0) + len(self._deferred)

    def usage(self) -> Usage:
        """Busy slots, calls waiting and restarts, read on the host (no round trip)."""
        stats = self.stats()
        return Usage(stats.busy, stats.queued, self.slots, stats.restarts,
                     1 if self._state is READY else 0)

    def reload(self, config: dict[str, Any] | None = None) -> None:
        """Rebuild the target in the same process with a new ``config``: new calls wait,
        calls in flight finish, ``teardown()`` runs if defined, then the target is built
        again and ``setup(**config)`` runs. A failing setup raises SetupError and leaves
        the worker failed (stop it and start a new one); with ``check_config``, a config
        that does not fit raises SetupError with ``problems`` before the old target is torn
        down, and the worker goes on as it was. ``stop()`` may interrupt a reload whose
        setup hangs."""
        new_config = self.config if config is None else dict(config)
        with self._gate:
            with self._lifecycle:
                if self._state is not READY or self._conn is None:
                    raise InvalidState(f"reload() on a worker that is {self._state}")
                self._state = RELOADING
                conn = self._conn
            # Not under _lifecycle: stop() must be able to end a setup that never returns.
            conn.wait_idle(None)
            reply = conn.request(lambda seq: m.Reload(seq, new_config, bool(self.check_config)),
                                 (m.Ready, m.SetupFailed)).result()
            with self._lifecycle:
                if self._state is not RELOADING:
                    raise InvalidState(f"the worker was {self._state} during reload()")
                if isinstance(reply, m.SetupFailed) and reply.error.kind == "config":
                    self._state = READY  # refused before teardown: the old target runs on
                    raise setup_error(self.target_name, reply)
                if isinstance(reply, m.SetupFailed):
                    self.setup_logs = reply.setup_logs
                    err = setup_error(self.target_name, reply)
                    self._fail(err)
                    raise err
                self.config = new_config
                self.methods = reply.methods
                self.setup_logs = reply.setup_logs
                self._state = READY

    def describe(self, timeout: float | None = 30.0) -> dict[str, m.MethodSchema]:
        """The JSON Schemas of every method's inputs and output, by method name (built in
        the worker from the type hints; ``msgspec.Meta`` constraints and descriptions
        included). For front ends that take inputs from outside: the CLI, HTTP."""
        with self._gate:
            conn = self._conn
            if conn is None or self._state not in CALLABLE:
                raise InvalidState(self._not_callable()) from self._failure
        return conn.request(lambda seq: m.Describe(seq), (m.Description,)).result(timeout).methods

    def __repr__(self) -> str:
        return f"<corral.Worker {self.target_name} pid={self.pid} {self._state}>"


def _timeout_error(sink: Any, timeout: float) -> CallTimeout:
    return CallTimeout(f"call {sink.id} ({sink.method}) did not finish within its timeout of "
                       f"{timeout:g} s; it was cancelled", timeout)


# Kept importable from here (tests, tools): the registry stops the live workers at exit.
_stop_live_workers = registry.stop_all
