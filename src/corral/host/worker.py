"""``Worker``: one isolated process hosting one target, called from the host."""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
from collections import deque
import inspect
import logging
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any, Callable

import msgspec

from ..exceptions import (
    ArgumentError,
    CallTimeout,
    Cancelled,
    InvalidState,
    MethodNotFound,
    ProtocolError,
    SetupError,
    WorkerCrashed,
    WorkerStartupError,
    WorkerUnavailable,
    make_remote_error,
)
from ..protocol import messages as m
from ..protocol.framing import DEFAULT_MAX_FRAME, TruncatedFrame
from ..protocol.shm import DEFAULT_THRESHOLD
from ..protocol.values import args_to_wire, to_wire
from ..protocol.version import check_hello
from .calls import (AsyncCallFuture, AsyncCallStream, BlockingCall, CallFuture, CallStream,
                    EventCallback, settle)
from .connection import Connection
from .process import WorkerProcess, describe_exit
from .supervisor import Crash, CrashHistory, restart_policy
from .timers import timers
from . import signals

log = logging.getLogger("corral")

#: Seconds a new worker process has to say Hello (interpreter start and imports).
HELLO_TIMEOUT = 30.0


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


class CallOptions:
    """Per-call options bound to a Worker: ``worker.options(context=..., timeout=...)``.

    Has the Worker's call methods (``call``, ``predict``, ``stream``, ``watch``, ``submit``
    and their async twins); ``context`` reaches the call as ``corral.current().context`` and
    ``on_event`` is called with every Log, Progress and Metric of the call as it arrives
    (on a corral thread for sync calls, on the event loop for async ones: keep it quick).
    ``timeout`` (seconds) stops the call in the worker when it runs longer and raises
    CallTimeout; ``idempotent`` lets a Pool retry the call on another worker when its
    worker crashes while running it. ``convert`` treats the keyword arguments as external
    input (JSON, command-line strings): the worker checks each against the method's type
    hints and converts it (``"3"`` to ``3`` for an int), and a bad input raises
    ArgumentError with ``problems`` listing every one.
    """

    __slots__ = ("_worker", "context", "on_event", "timeout", "idempotent", "convert")

    def __init__(self, worker: "Worker", context: dict[str, Any] | None,
                 on_event: EventCallback | None, timeout: float | None = None,
                 idempotent: bool = False, convert: bool = False):
        self._worker = worker
        self.context = context
        self.on_event = on_event
        self.timeout = timeout
        self.idempotent = idempotent
        self.convert = convert

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._worker._submit(method, args, kwargs, self, _blocking, True)

    def predict(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.call("predict", *args, **kwargs)

    def submit(self, method: str, /, *args: Any, **kwargs: Any) -> CallFuture:
        return self._worker._submit(method, args, kwargs, self, _future)

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> CallStream:
        return self._worker._submit(method, args, kwargs, self, _stream)

    def watch(self, method: str, /, *args: Any, **kwargs: Any) -> CallStream:
        return self._worker._submit(method, args, kwargs, self, _watch)

    def map(self, method: str, /, *iterables: Any) -> Any:
        """Call ``method`` once per item, like ``Executor.map``: ``map("predict", xs)``
        calls ``predict(x)`` for each ``x``; several iterables zip into positional
        arguments. Returns an iterator of the results, in order."""
        return self._worker._map(method, zip(*iterables), self)

    def starmap(self, method: str, /, iterable: Any) -> Any:
        """Like ``map``, with each item a tuple of positional arguments."""
        return self._worker._map(method, iter(iterable), self)

    async def acall(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return await self.asubmit(method, *args, **kwargs)

    def asubmit(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncCallFuture:
        return self._worker._submit(method, args, kwargs, self, _afuture)

    def astream(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncCallStream:
        return self._worker._submit(method, args, kwargs, self, _astream)

    def awatch(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncCallStream:
        return self._worker._submit(method, args, kwargs, self, _awatch)


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


class Worker(CallOptions):
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

    Use it as a context manager, or call ``start()`` and ``stop()``::

        with corral.Worker("examples/echo/echo.py:Echo") as w:
            w.call("echo", "hi")
    """

    def __init__(self, target: Any, *, config: dict[str, Any] | None = None, slots: int = 1,
                 python: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, allow_pickle: bool = False, prefetch: int = 128,
                 max_frame: int = DEFAULT_MAX_FRAME, start_timeout: float | None = None,
                 oob_threshold: int = DEFAULT_THRESHOLD, restart: Any = True,
                 timeout: float | None = None, cancel_grace: float = 2.0,
                 max_calls: int | None = None, max_rss: int | None = None,
                 check_config: bool | str = False):
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, not {slots!r}")
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, not {prefetch!r}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        if config and not all(isinstance(k, str) for k in config):
            raise TypeError("config keys must be str (they become setup()'s keyword arguments)")
        _check_positive("timeout", timeout)
        _check_positive("cancel_grace", cancel_grace)
        _check_positive("max_calls", max_calls, int)
        _check_positive("max_rss", max_rss, int)
        super().__init__(self, None, None)
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
        self.target_name = target if isinstance(target, str) else _describe(target)
        self._state = "new"
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
    def state(self) -> str:
        return self._state

    @property
    def crashes(self) -> list[Crash]:
        """The crashes seen so far (the latest ones), oldest first."""
        return list(self._history.crashes)

    def start(self) -> "Worker":
        """Start the process, load the target and wait until it is ready.

        Raises SetupError when loading or ``setup()`` fails (with the setup logs), and
        WorkerStartupError when the process does not start or speaks another protocol.
        """
        with self._lifecycle:
            if self._state != "new":
                raise InvalidState(f"start() on a worker that is {self._state}; "
                                   "make a new Worker to start again")
            self._state = "starting"
            try:
                proc, conn = self._launch()
            except BaseException as exc:
                self._fail(exc)
                raise
            self._install(proc, conn)
            self._state = "ready"
            _live_workers.add(self)
            signals.install()  # drain calls in flight on SIGTERM/SIGINT (main thread only)
        return self

    def _launch(self) -> tuple[WorkerProcess, Connection]:
        """Start a process and take it through the handshake to Ready; on failure, kill
        and release it and raise why."""
        spec = self._target_spec()
        t0 = time.monotonic()
        try:
            proc = WorkerProcess(self.python, self.env, self.max_frame, self.cwd)
        except OSError as exc:
            raise WorkerStartupError(
                f"cannot start a worker with {self.python or sys.executable!r}: {exc}") from exc
        self._launching = proc
        conn = None
        try:
            conn = Connection(
                proc.control, proc.data, proc.fds, window=self.slots + self.prefetch,
                allow_pickle=self.allow_pickle, oob_threshold=self.oob_threshold,
                max_frame=self.max_frame, on_worker_log=proc.note_output,
                on_broken=functools.partial(self._on_broken, proc),
                make_error=self._make_error, cancel_grace=self.cancel_grace,
                on_overdue=functools.partial(self._overdue, proc),
                on_settled=self._cancels_settled)
            self._handshake(proc, conn)
        except BaseException:
            proc.kill()
            if conn is not None:
                conn.close(InvalidState("the worker failed to start"))
            proc.close()
            raise
        finally:
            self._launching = None
        self._started_at = time.monotonic()
        self.start_time = self._started_at - t0
        return proc, conn

    def _install(self, proc: WorkerProcess, conn: Connection) -> None:
        """Make a ready process the one calls go to (under _lifecycle)."""
        self._proc, self._conn = proc, conn
        self._calls_left = self.max_calls or 1 << 62  # calls this process may still take
        conn.start(proc.pid)
        if self.max_rss is not None:
            self._watch_rss(proc)

    def _handshake(self, proc: WorkerProcess, conn: Connection) -> None:
        proc.control.settimeout(HELLO_TIMEOUT)
        hello = self._read_startup(proc, conn, "its hello")
        if not isinstance(hello, m.Hello):
            raise ProtocolError(f"worker {proc.pid} sent {type(hello).__name__} before Hello")
        problem = check_hello(hello.protocol, hello.corral_version)
        if problem:
            raise WorkerStartupError(f"worker {proc.pid} ({self.python or sys.executable}): "
                                     f"{problem}")
        proc.control.settimeout(self.start_timeout)
        conn.send_control(m.Init(self._target_spec(), self.config, self.slots,
                                 self.allow_pickle, self.oob_threshold,
                                 bool(self.check_config), self.check_config == "only"))
        while True:
            msg = self._read_startup(proc, conn, "Ready")
            if isinstance(msg, m.WorkerLog):
                proc.note_output(msg.stream, msg.text)
                continue
            break
        if isinstance(msg, m.SetupFailed):
            self.setup_logs = msg.setup_logs
            raise _setup_error(self.target_name, msg)
        if not isinstance(msg, m.Ready):
            raise ProtocolError(f"worker {proc.pid} sent {type(msg).__name__} instead of Ready")
        proc.control.settimeout(None)
        self.methods = msg.methods
        self.setup_logs = msg.setup_logs
        self.target_name = msg.target

    def _read_startup(self, proc: WorkerProcess, conn: Connection, what: str) -> Any:
        try:
            msg = conn.read_control()
        except socket.timeout:
            raise WorkerStartupError(f"worker {proc.pid} did not send {what} in time",
                                     proc.stderr_tail(0)) from None
        except (OSError, TruncatedFrame):
            msg = None  # it died (or hung up) while we waited: reported below with its exit
        except Exception as exc:  # noqa: BLE001 - anything else it sent is garbage
            raise ProtocolError(f"worker {proc.pid} sent an undecodable message during "
                                f"startup: {exc}") from exc
        if msg is None:
            code = proc.wait(5.0)
            text, _ = describe_exit(code)
            raise WorkerStartupError(
                f"worker {proc.pid} ended before sending {what} ({text}); is corral importable "
                f"by {self.python or sys.executable!r}?", proc.stderr_tail())
        return msg

    def _target_spec(self) -> m.TargetSpec:
        if isinstance(self.target, str):
            return m.TargetSpec(ref=self.target)
        return m.TargetSpec(pickled=_pickle_target(self.target))

    # -- supervision ------------------------------------------------------------------------

    def _on_broken(self, proc: WorkerProcess, error: BaseException | None) -> BaseException:
        """Called once by a process's connection when its channel ends or breaks: reap it,
        say what happened (the error every call in flight gets) and decide what next."""
        retired = proc.pid in self._retired
        self._retired.discard(proc.pid)
        current = proc is self._proc and self._state not in ("stopping", "stopped")
        if error is None:
            code = proc.wait(2.0)
            if code is None:  # it closed its socket but lives on: that is broken too
                proc.kill()
                code = proc.wait(None)
            proc.kill_group()  # whatever it started dies with it
            text, sig = describe_exit(code)
            reason = self._kill_reason.pop(proc.pid, None)
            if not current and not reason:
                return WorkerCrashed(f"worker {proc.pid} was stopped before the call finished",
                                     pid=proc.pid, exitcode=code, signal_name=sig)
            what = f"{reason}; {text}" if reason else f"died: {text}"
            err = WorkerCrashed(f"worker {proc.pid} ({self.target_name}) {what}", pid=proc.pid,
                                exitcode=code, signal_name=sig, stderr=proc.stderr_tail())
            if current and not retired:
                self._crashed(Crash(time.time(), proc.pid, code, sig, what))
            return err
        # It broke the protocol: that process is defunct (killed, its calls fail with the
        # error), and the worker goes on like after a crash: restarted by its policy.
        proc.kill()
        if isinstance(error, ProtocolError):
            error.pid = proc.pid
        if current and not retired:
            code = proc.wait(2.0)
            proc.kill_group()
            _, sig = describe_exit(code)
            first_line = str(error).split("\n", 1)[0]
            self._crashed(Crash(time.time(), proc.pid, code, sig,
                                f"broke the protocol ({first_line}) and was killed"), error)
        return error

    def _crashed(self, crash: Crash, cause: BaseException | None = None) -> None:
        """The current process crashed (``cause``: the protocol error it made, if that was
        why): restart it after a backoff, or give up."""
        delay = self._history.record(crash)
        if delay is None:
            policy = self.restart
            why = ("restarting is off (restart=False)" if policy.max_restarts == 0 else
                   f"it crashed too often (more than {policy.max_restarts} times in "
                   f"{policy.window:g} s) and is not restarted any more")
            unavailable = WorkerUnavailable(
                f"worker {crash.pid or ''} ({self.target_name}) {crash.reason}; {why}",
                list(self._history.crashes))
            unavailable.__cause__ = cause
            self._fail(unavailable)
            return
        self._state = "restarting"
        self._detail = f"restarting in {delay:.2f} s after: {crash.reason}"
        log.warning("corral: worker %s (%s) %s; restarting in %.2f s", crash.pid,
                    self.target_name, crash.reason, delay)
        timers.schedule(delay, lambda: threading.Thread(
            target=self._restart, name="corral-restart", daemon=True).start())

    def _restart(self) -> None:
        """Start a new process for a restart or a recycle, then send what waited."""
        with self._lifecycle:
            if self._state != "restarting":
                return  # stopped meanwhile
            old = self._proc
        if old is not None:
            self._conn.close(WorkerCrashed(f"worker {old.pid} was replaced", pid=old.pid))
            old.close()
        try:
            proc, conn = self._launch()
        except BaseException as exc:  # noqa: BLE001
            with self._lifecycle:
                if self._state != "restarting":
                    return
                self._crashed(Crash(time.time(), None, None, None,
                                    f"restart failed: {str(exc).splitlines()[0]}"))
            return
        with self._gate, self._lifecycle:
            if self._state != "restarting":
                proc.kill()
                conn.close(InvalidState("the worker was stopped while restarting"))
                proc.close()
                return
            self._install(proc, conn)
            self._state = "ready"
            self._detail = ""
            failed = self._deferred.flush(self)
        self._notify_changed()
        _fail_sinks(failed)

    def _cancels_settled(self) -> None:
        """Every cancelled call stopped (on the reader thread): send the calls that were
        held back meanwhile, from another thread (the gate may be held by reload())."""
        def flush() -> None:
            failed: list = []
            with self._gate:
                conn = self._conn
                if self._state == "ready" and conn is not None and not conn.cancels_pending:
                    failed = self._deferred.flush(self)
            _fail_sinks(failed)

        # (always: a call may be joining the queue right now, under the gate)
        threading.Thread(target=flush, name="corral-flush", daemon=True).start()

    def _overdue(self, proc: WorkerProcess, call_id: int) -> None:
        """A cancelled call did not stop within cancel_grace: kill its worker (on the timer
        thread; the connection then reports a crash and the worker restarts)."""
        if proc is not self._proc:
            return
        self._kill_reason[proc.pid] = (f"was killed because call {call_id} did not stop within "
                                       f"cancel_grace={self.cancel_grace:g} s of its cancel")
        log.warning("corral: worker %s (%s): call %s did not stop within %.1f s of its "
                    "cancel; killing the worker", proc.pid, self.target_name, call_id,
                    self.cancel_grace)
        proc.kill_group()

    def _recycle_soon(self, proc: WorkerProcess, why: str) -> None:
        # Called on the timer thread, which must not wait for the gate.
        def recycle() -> None:
            with self._gate:
                if proc is self._proc:
                    self._begin_recycle(why)

        threading.Thread(target=recycle, name="corral-recycle", daemon=True).start()

    def _begin_recycle(self, why: str) -> None:
        """Replace the process by a fresh one without failing a call (under _gate): new
        calls wait, calls in flight finish, then it stops and a new one starts. Never two
        at once: the model's memory, GPU memory included, is given back before it is
        taken again."""
        with self._lifecycle:
            if self._state != "ready":
                return
            self._state = "restarting"
            self._detail = f"recycling after {why}"
            proc, conn = self._proc, self._conn
            assert proc is not None and conn is not None
            self._retired.add(proc.pid)
            self._recycles += 1
        log.info("corral: recycling worker %s (%s) after %s", proc.pid, self.target_name, why)
        threading.Thread(target=self._retire, args=(proc, conn), name="corral-recycle",
                         daemon=True).start()

    def _retire(self, proc: WorkerProcess, conn: Connection) -> None:
        conn.wait_idle(None)
        try:
            conn.send_control(m.Shutdown(self.cancel_grace))
        except OSError:
            pass
        if proc.wait(self.cancel_grace + 2.0) is None:
            proc.terminate(2.0)
        self._restart()

    def _watch_rss(self, proc: WorkerProcess) -> None:
        def check() -> None:
            if proc is not self._proc or self._state in ("stopping", "stopped", "failed"):
                return
            rss = proc.rss_bytes()
            if rss is not None and rss > self.max_rss and self._state == "ready":
                self._recycle_soon(proc, f"max_rss ({rss} bytes > {self.max_rss})")
                return
            self._rss_timer = timers.schedule(RSS_CHECK_INTERVAL, check)

        self._rss_timer = timers.schedule(RSS_CHECK_INTERVAL, check)

    def _fail(self, err: BaseException) -> None:
        self._state = "failed"
        self._failure = err
        self._detail = str(err).split("\n", 1)[0]
        self._deferred.fail_all(err)
        self._notify_changed()

    def _notify_changed(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait_while_restarting(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._state != "restarting")

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

    def stop(self, grace: float = 10.0) -> None:
        """Stop the worker: wait up to ``grace`` seconds for calls in flight, run the
        target's ``teardown()`` if it has one, end the process (SIGTERM, then SIGKILL) and
        release everything. Calls still running fail with WorkerCrashed, calls waiting for
        a restart with InvalidState. Idempotent."""
        with self._lifecycle:
            if self._state in ("new", "stopped"):
                self._state = "stopped"
                return
            was = self._state
            self._state = "stopping"
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
                if was not in ("failed", "restarting"):
                    conn.wait_idle(grace)
                try:
                    conn.send_control(m.Shutdown(max(0.0, deadline - time.monotonic())))
                except OSError:
                    pass
                if proc.wait(max(0.0, deadline - time.monotonic()) + 2.0) is None:
                    proc.terminate(2.0)
                proc.kill_group()
                conn.close(WorkerCrashed(
                    f"worker {proc.pid} was stopped before the call finished", pid=proc.pid))
                proc.close()
            self._state = "stopped"
            _live_workers.discard(self)
        self._notify_changed()

    def __enter__(self) -> "Worker":
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "Worker":
        if self._state == "new":
            await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.stop)

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and self._state not in ("stopped", "new"):
            try:
                proc.kill()
                proc.close()
            except Exception:  # noqa: BLE001 - best effort during interpreter teardown
                pass

    # -- calls ------------------------------------------------------------------------------

    def options(self, *, context: dict[str, Any] | None = None,
                on_event: EventCallback | None = None, timeout: float | None = None,
                idempotent: bool = False, convert: bool = False) -> CallOptions:
        """Call with options: ``worker.options(context={...}, timeout=5).call(...)``
        (see CallOptions)."""
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context must be a dict, not {type(context).__name__}")
        _check_positive("timeout", timeout)
        return CallOptions(self, context, on_event, timeout, idempotent, convert)

    def _submit(self, method: str, args: tuple, kwargs: dict, opts: CallOptions,
                make: Callable[..., Any], blocking: bool = False) -> Any:
        timeout = opts.timeout if opts.timeout is not None else self.default_timeout
        with self._gate:
            state, held = self._state, self._conn
            # Held back: while a restart is under way, and while a cancel is unresolved
            # (the worker may yet be killed for it).
            if held is not None and (state == "restarting"
                                     or state == "ready" and held.cancels_pending):
                info = self._method_info(method)
                # Encoded for real once the process is ready; checked now, so that a value
                # that cannot be sent raises here as it would at any other time.
                args_to_wire(args, kwargs, self.allow_pickle, None)
                if opts.context is not None:
                    to_wire(opts.context, allow_pickle=self.allow_pickle, where="context")
                sink = make(next(self._ids), method, info.streams, opts)
                if blocking:
                    sink.prepare_to_wait()
                self._arm_deadline(sink, timeout)
                self._deferred.add(sink, method, args, kwargs, opts)
                if not blocking:
                    return sink
                leading = False
            else:
                conn, info = self._callable(method)
                if args or kwargs:
                    args, kwargs = args_to_wire(args, kwargs, self.allow_pickle, conn.exporter)
                else:
                    args = []
                context = opts.context
                if context is not None:
                    context = to_wire(context, allow_pickle=self.allow_pickle, where="context")
                call_id = next(self._ids)
                payload = conn.encode(m.Call(call_id, method, args, kwargs, context,
                                             conn.shm.take_release(), opts.convert))
                if len(payload) > self.max_frame:
                    raise _too_large(len(payload), self.max_frame)
                sink = make(call_id, method, info.streams, opts)
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
        try:
            wire_args, wire_kwargs = args_to_wire(args, kwargs, self.allow_pickle,
                                                  conn.exporter) if args or kwargs else ([], {})
            context = opts.context
            if context is not None:
                context = to_wire(context, allow_pickle=self.allow_pickle, where="context")
        except Exception as exc:  # noqa: BLE001 - the caller's value, reported to the caller
            return exc
        payload = conn.encode(m.Call(sink.id, method, wire_args, wire_kwargs, context,
                                     conn.shm.take_release(), opts.convert))
        if len(payload) > self.max_frame:
            return _too_large(len(payload), self.max_frame)
        return conn.submit_or_refuse(sink.id, payload, sink)

    def _map(self, method: str, items: Any, opts: CallOptions) -> Any:
        """Pipelined calls read on the calling thread: while the worker runs one call, the
        next ones are already in its socket, and the calls of a batch leave in one system
        call. A failed call raises from the iterator when its turn comes."""
        window = self.slots + self.prefetch
        pending: deque = deque()
        try:
            yield from self._map_loop(method, items, opts, window, pending)
        finally:
            conn = self._conn
            if conn is not None:
                if pending:
                    conn._wake.set()  # abandoned early: let the reader collect the rest
                conn.flush_releases()  # what the last results' leases need

    def _map_loop(self, method: str, items: Any, opts: CallOptions, window: int,
                  pending: deque) -> Any:
        exhausted = False
        while True:
            batch = []
            if self._state == "restarting" and not pending:
                self._wait_while_restarting()
            with self._gate:
                restarting = self._state == "restarting"
                if restarting and not pending:
                    continue  # it crashed again just now
                if not restarting:
                    conn, info = self._callable(method)
                while not restarting and not exhausted and len(pending) + len(batch) < window:
                    if self._calls_left == 0:
                        break
                    try:
                        args = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    wire_args = args_to_wire(tuple(args), {}, self.allow_pickle,
                                             conn.exporter)[0] if args else []
                    call_id = next(self._ids)
                    self._calls_left -= 1
                    sink = BlockingCall(call_id, method, info.streams, opts.on_event)
                    sink.prepare_to_wait()
                    payload = conn.encode(m.Call(call_id, method, wire_args, {}, opts.context,
                                                 conn.shm.take_release()))
                    if len(payload) > self.max_frame:
                        raise _too_large(len(payload), self.max_frame)
                    batch.append((call_id, payload, sink))
                if batch:
                    conn.submit_batch(batch)
                if not restarting and self._calls_left == 0:
                    self._begin_recycle(f"max_calls={self.max_calls}")
            pending.extend(sink for _, _, sink in batch)
            if not pending:
                return
            head = pending[0]
            owner = head._owner  # its connection (an old one, if the worker restarted)
            if owner is not None:
                owner.read_until(head)
            pending.popleft()
            yield head.result()

    def _callable(self, method: str) -> tuple[Connection, m.MethodInfo]:
        """The connection and the method's info, or why no call can be made (under _gate)."""
        conn = self._conn
        if conn is None or self._state not in ("ready", "reloading"):
            if self._state == "failed" and isinstance(self._failure, WorkerUnavailable):
                raise self._failure
            raise InvalidState(self._not_callable()) from self._failure
        return conn, self._method_info(method)

    def _method_info(self, method: str) -> m.MethodInfo:
        info = self.methods.get(method)
        if info is None:
            if not isinstance(method, str):
                raise TypeError(f"method name must be a str, not {type(method).__name__}")
            raise MethodNotFound(method, sorted(self.methods))
        return info

    def _not_callable(self) -> str:
        if self._state == "new":
            return "the worker is not started: call start() or use it as a context manager"
        if self._state == "failed":
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
        if state != "ready" or conn is None:
            return Health(state, pid, 0, self.slots, self._detail, restarts)
        try:
            pong = conn.request(lambda seq: m.Ping(seq), (m.Pong,)).result(timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
            if self._state != "ready" or self._conn is not conn:
                return Health(self._state, self.pid, 0, self.slots, self._detail,
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
        alive = self._state in ("ready", "reloading", "stopping")
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
                if self._state != "ready" or self._conn is None:
                    raise InvalidState(f"reload() on a worker that is {self._state}")
                self._state = "reloading"
                conn = self._conn
            # Not under _lifecycle: stop() must be able to end a setup that never returns.
            conn.wait_idle(None)
            reply = conn.request(lambda seq: m.Reload(seq, new_config, bool(self.check_config)),
                                 (m.Ready, m.SetupFailed)).result()
            with self._lifecycle:
                if self._state != "reloading":
                    raise InvalidState(f"the worker was {self._state} during reload()")
                if isinstance(reply, m.SetupFailed) and reply.error.kind == "config":
                    self._state = "ready"  # refused before teardown: the old target runs on
                    raise _setup_error(self.target_name, reply)
                if isinstance(reply, m.SetupFailed):
                    self.setup_logs = reply.setup_logs
                    err = _setup_error(self.target_name, reply)
                    self._fail(err)
                    raise err
                self.config = new_config
                self.methods = reply.methods
                self.setup_logs = reply.setup_logs
                self._state = "ready"

    def describe(self, timeout: float | None = 30.0) -> dict[str, m.MethodSchema]:
        """The JSON Schemas of every method's inputs and output, by method name (built in
        the worker from the type hints; ``msgspec.Meta`` constraints and descriptions
        included). For front ends that take inputs from outside: the CLI, HTTP."""
        with self._gate:
            conn = self._conn
            if conn is None or self._state not in ("ready", "reloading"):
                raise InvalidState(self._not_callable()) from self._failure
        return conn.request(lambda seq: m.Describe(seq), (m.Description,)).result(timeout).methods

    def get_state(self) -> Any:
        """The target's state: calls its ``get_state()`` method."""
        return self.call("get_state")

    def set_state(self, state: Any) -> Any:
        """Restore the target's state: calls its ``set_state(state)`` method."""
        return self.call("set_state", state)

    def __repr__(self) -> str:
        return f"<corral.Worker {self.target_name} pid={self.pid} {self._state}>"


#: Seconds between two RSS checks of a worker with ``max_rss``.
RSS_CHECK_INTERVAL = 1.0


class _Deferred:
    """Calls made while the worker restarts: sent, in order, once it is ready again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple] = {}  # by id; dicts keep insertion order

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, sink: Any, method: str, args: tuple, kwargs: dict, opts: Any) -> None:
        with self._lock:
            self._calls[sink.id] = (sink, method, args, kwargs, opts)
            sink._owner = self

    def cancel(self, sink: Any, error: BaseException) -> bool:
        with self._lock:
            if self._calls.pop(sink.id, None) is None:
                return False
        if sink._timer is not None:
            sink._timer.cancel()
        settle(sink, error=error)
        return True

    def flush(self, worker: Worker) -> list[tuple[Any, BaseException]]:
        """Send the waiting calls, in order, as far as the new process may take them (it
        may be recycled again after ``max_calls``). Returns the calls that could not be
        sent, with why: the caller fails them once it holds no lock."""
        failed = []
        with self._lock:
            while self._calls and worker._state == "ready":
                call_id = next(iter(self._calls))
                call = self._calls.pop(call_id)
                error = worker._send_deferred(*call)
                if error is not None:
                    failed.append((call[0], error))
                    continue
                worker._calls_left -= 1
                if worker._calls_left == 0:
                    worker._begin_recycle(f"max_calls={worker.max_calls}")
        return failed

    def fail_all(self, error: BaseException) -> None:
        with self._lock:
            calls, self._calls = self._calls, {}
        for sink, *_ in calls.values():
            if sink._timer is not None:
                sink._timer.cancel()
            settle(sink, error=error)


def _too_large(size: int, limit: int) -> ValueError:
    return ValueError(f"the call's arguments make a frame of {size} bytes, which exceeds the "
                      f"frame limit of {limit} bytes (max_frame); big bytes and arrays cross "
                      "through shared memory, other values must fit")


def _fail_sinks(failed: list[tuple[Any, BaseException]]) -> None:
    for sink, error in failed:
        if sink._timer is not None:
            sink._timer.cancel()
        settle(sink, error=error)


def _timeout_error(sink: Any, timeout: float) -> CallTimeout:
    return CallTimeout(f"call {sink.id} ({sink.method}) did not finish within its timeout of "
                       f"{timeout:g} s; it was cancelled", timeout)


def _check_positive(name: str, value: Any, kind: type = (int, float)) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive number (or None), not {value!r}")


def _setup_error(target: str, msg: m.SetupFailed) -> SetupError:
    info = msg.error
    if info.kind == "config":  # the traceback of a check is noise: the problems say it all
        return SetupError(f"the config of {target} does not fit its setup(): {info.message}",
                          error_type=info.type, logs=msg.setup_logs,
                          problems=info.problems)
    return SetupError(f"setting up {target} failed: {info.type}: {info.message}",
                      error_type=info.type, remote_traceback=info.traceback,
                      logs=msg.setup_logs)


def _describe(obj: Any) -> str:
    if isinstance(obj, type) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def _pickle_target(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "shipping a local class, instance or function to a worker needs cloudpickle: "
            "pip install 'corral[pickle]' (or pass a reference like 'module:Name')") from None
    module = sys.modules.get(getattr(obj, "__module__", None) or type(obj).__module__)
    # The target's own module goes by value: the worker may not be able to import it (a
    # test file, a notebook). Its imports (numpy, torch...) still go by reference.
    by_value = module is not None and module.__name__ not in ("__main__", "builtins") \
        and not module.__name__.startswith("corral")
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise TypeError(f"cannot ship target {_describe(obj)} to a worker: {exc}") from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


_live_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()


if hasattr(os, "register_at_fork"):
    # A child forked by the host does not own its parent's workers: its exit must not
    # stop them (the sockets it inherited are closed there, host/process.py).
    os.register_at_fork(after_in_child=_live_workers.clear)


@atexit.register
def _stop_live_workers() -> None:
    # A host that exits without stopping its workers still leaves nothing behind.
    for worker in list(_live_workers):
        try:
            worker.stop(grace=1.0)
        except Exception:  # noqa: BLE001
            pass
