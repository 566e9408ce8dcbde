"""``Worker``: one isolated process hosting one target, called from the host."""

from __future__ import annotations

import asyncio
import atexit
from collections import deque
import inspect
import socket
import sys
import threading
import time
import weakref
from typing import Any, Callable

import msgspec

from ..exceptions import (
    ArgumentError,
    InvalidState,
    MethodNotFound,
    ProtocolError,
    SetupError,
    WorkerCrashed,
    WorkerStartupError,
    make_remote_error,
)
from ..protocol import messages as m
from ..protocol.framing import DEFAULT_MAX_FRAME, TruncatedFrame
from ..protocol.shm import DEFAULT_THRESHOLD
from ..protocol.values import args_to_wire, to_wire
from ..protocol.version import check_hello
from .calls import AsyncCallFuture, BlockingCall, AsyncCallStream, CallFuture, CallStream, EventCallback
from .connection import Connection
from .process import WorkerProcess, describe_exit

#: Seconds a new worker process has to say Hello (interpreter start and imports).
HELLO_TIMEOUT = 30.0


class Health(msgspec.Struct):
    """What ``Worker.health()`` reports. ``status`` is one of new, starting, ready, busy,
    reloading, stopping, stopped, failed; ``detail`` says why when failed."""

    status: str
    pid: int | None
    busy: int
    slots: int
    detail: str = ""


class Stats(msgspec.Struct):
    """What ``Worker.stats()`` reports; ``rss`` is in bytes, ``uptime`` in seconds."""

    pid: int | None
    rss: int | None
    calls_served: int
    busy: int
    queued: int
    slots: int
    uptime: float


class CallOptions:
    """Per-call options bound to a Worker: ``worker.options(context=..., on_event=...)``.

    Has the Worker's call methods (``call``, ``predict``, ``stream``, ``watch``, ``submit``
    and their async twins); ``context`` reaches the call as ``corral.current().context`` and
    ``on_event`` is called with every Log, Progress and Metric of the call as it arrives
    (on a corral thread for sync calls, on the event loop for async ones: keep it quick).
    """

    __slots__ = ("_worker", "context", "on_event")

    def __init__(self, worker: "Worker", context: dict[str, Any] | None,
                 on_event: EventCallback | None):
        self._worker = worker
        self.context = context
        self.on_event = on_event

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._worker._submit(method, args, kwargs, self, _blocking, True).result()

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

    Use it as a context manager, or call ``start()`` and ``stop()``::

        with corral.Worker("examples/echo/echo.py:Echo") as w:
            w.call("echo", "hi")
    """

    def __init__(self, target: Any, *, config: dict[str, Any] | None = None, slots: int = 1,
                 python: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, allow_pickle: bool = False, prefetch: int = 128,
                 max_frame: int = DEFAULT_MAX_FRAME, start_timeout: float | None = None,
                 oob_threshold: int = DEFAULT_THRESHOLD):
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, not {slots!r}")
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, not {prefetch!r}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        if config and not all(isinstance(k, str) for k in config):
            raise TypeError("config keys must be str (they become setup()'s keyword arguments)")
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
        self.methods: dict[str, m.MethodInfo] = {}
        self.setup_logs: list[str] = []
        self.target_name = target if isinstance(target, str) else _describe(target)
        self._state = "new"
        self._detail = ""
        self._failure: BaseException | None = None
        self._proc: WorkerProcess | None = None
        self._conn: Connection | None = None
        self._lifecycle = threading.RLock()
        self._gate = threading.Lock()  # held by reload() so that no call is sent meanwhile
        self._started_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def state(self) -> str:
        return self._state

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
                self._start()
            except BaseException as exc:
                self._fail(exc)
                self._discard()
                raise
            self._state = "ready"
            _live_workers.add(self)
        return self

    def _start(self) -> None:
        spec = self._target_spec()
        t0 = time.monotonic()
        try:
            proc = self._proc = WorkerProcess(self.python, self.env, self.max_frame, self.cwd)
        except OSError as exc:
            raise WorkerStartupError(
                f"cannot start a worker with {self.python or sys.executable!r}: {exc}") from exc
        conn = self._conn = Connection(
            proc.control, proc.data, proc.fds, window=self.slots + self.prefetch,
            allow_pickle=self.allow_pickle, oob_threshold=self.oob_threshold,
            max_frame=self.max_frame,
            on_worker_log=proc.note_output, on_broken=self._on_broken,
            make_error=self._make_error)
        proc.control.settimeout(HELLO_TIMEOUT)
        hello = self._read_startup(conn, "its hello")
        if not isinstance(hello, m.Hello):
            raise ProtocolError(f"worker {proc.pid} sent {type(hello).__name__} before Hello")
        problem = check_hello(hello.protocol, hello.corral_version)
        if problem:
            raise WorkerStartupError(f"worker {proc.pid} ({self.python or sys.executable}): "
                                     f"{problem}")
        proc.control.settimeout(self.start_timeout)
        conn.send_control(m.Init(spec, self.config, self.slots, self.allow_pickle,
                                 self.oob_threshold))
        while True:
            msg = self._read_startup(conn, "Ready")
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
        self._started_at = time.monotonic()
        self.start_time = self._started_at - t0
        conn.start(proc.pid)

    def _read_startup(self, conn: Connection, what: str) -> Any:
        proc = self._proc
        assert proc is not None
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

    def _discard(self) -> None:
        """Kill and release whatever the failed start left."""
        if self._proc is not None:
            self._proc.kill()
            if self._conn is not None:
                self._conn.close(InvalidState("the worker failed to start"))
            self._proc.close()

    def _on_broken(self, error: BaseException | None) -> BaseException:
        """Called once by the connection when the worker's channel ends or breaks."""
        proc = self._proc
        assert proc is not None
        stopping = self._state in ("stopping", "stopped")
        if error is None:
            code = proc.wait(2.0)
            if code is None:  # it closed its socket but lives on: that is broken too
                proc.kill()
                code = proc.wait(None)
            text, sig = describe_exit(code)
            if stopping:
                err: BaseException = WorkerCrashed(
                    f"worker {proc.pid} was stopped before the call finished", pid=proc.pid,
                    exitcode=code, signal_name=sig)
            else:
                err = WorkerCrashed(f"worker {proc.pid} ({self.target_name}) died: {text}",
                                    pid=proc.pid, exitcode=code, signal_name=sig,
                                    stderr=proc.stderr_tail())
        else:
            proc.kill()
            err = error
            if isinstance(err, ProtocolError):
                err.pid = proc.pid
        if not stopping:
            self._fail(err)
        return err

    def _fail(self, err: BaseException) -> None:
        self._state = "failed"
        self._failure = err
        self._detail = str(err).split("\n", 1)[0]

    def _make_error(self, sink: Any, info: m.ErrorInfo) -> BaseException:
        if info.kind == "arguments":
            meth = self.methods.get(sink.method)
            return ArgumentError(sink.method, meth.signature if meth else "(...)", info.message)
        if info.kind == "method":
            return MethodNotFound(info.message, sorted(self.methods))
        return make_remote_error(info)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the worker: wait up to ``grace`` seconds for calls in flight, run the
        target's ``teardown()`` if it has one, end the process (SIGTERM, then SIGKILL) and
        release everything. Calls still running fail with WorkerCrashed. Idempotent."""
        with self._lifecycle:
            if self._state in ("new", "stopped"):
                self._state = "stopped"
                return
            if self._state == "failed" and self._proc is None:
                self._state = "stopped"
                return
            self._state = "stopping"
            proc, conn = self._proc, self._conn
            assert proc is not None and conn is not None
            deadline = time.monotonic() + grace
            conn.wait_idle(grace)
            try:
                conn.send_control(m.Shutdown(max(0.0, deadline - time.monotonic())))
            except OSError:
                pass
            if proc.wait(max(0.0, deadline - time.monotonic()) + 2.0) is None:
                proc.terminate(2.0)
            conn.close(WorkerCrashed(f"worker {proc.pid} was stopped before the call finished",
                                     pid=proc.pid))
            proc.close()
            self._state = "stopped"
            _live_workers.discard(self)

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
                on_event: EventCallback | None = None) -> CallOptions:
        """Call with options: ``worker.options(context={...}, on_event=print).call(...)``."""
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context must be a dict, not {type(context).__name__}")
        return CallOptions(self, context, on_event)

    def _submit(self, method: str, args: tuple, kwargs: dict, opts: CallOptions,
                make: Callable[..., Any], blocking: bool = False) -> Any:
        with self._gate:
            conn, info = self._callable(method)
            if args or kwargs:
                args, kwargs = args_to_wire(args, kwargs, self.allow_pickle, conn.exporter)
            else:
                args = []
            context = opts.context
            if context is not None:
                context = to_wire(context, allow_pickle=self.allow_pickle, where="context")
            call_id = next(conn.ids)
            payload = conn.encode(m.Call(call_id, method, args, kwargs, context,
                                         conn.shm.take_release()))
            sink = make(call_id, method, info.streams, opts)
            if not blocking:
                conn.submit(call_id, payload, sink)
                return sink
        conn.call(call_id, payload, sink)  # outside the gate: it blocks until the call ends
        return sink

    def _map(self, method: str, items: Any, opts: CallOptions) -> Any:
        """Pipelined calls read on the calling thread: while the worker runs one call, the
        next ones are already in its socket, and the calls of a batch leave in one system
        call. A failed call raises from the iterator when its turn comes."""
        window = self.slots + self.prefetch
        pending: deque = deque()
        try:
            yield from self._map_loop(method, items, opts, window, pending)
        finally:
            if self._conn is not None:
                if pending:
                    self._conn._wake.set()  # abandoned early: let the reader collect the rest
                self._conn.flush_releases()  # what the last results' leases need

    def _map_loop(self, method: str, items: Any, opts: CallOptions, window: int,
                  pending: deque) -> Any:
        exhausted = False
        while True:
            batch = []
            with self._gate:
                conn, info = self._callable(method)
                while not exhausted and len(pending) + len(batch) < window:
                    try:
                        args = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    wire_args = args_to_wire(tuple(args), {}, self.allow_pickle,
                                             conn.exporter)[0] if args else []
                    call_id = next(conn.ids)
                    sink = BlockingCall(call_id, method, info.streams, opts.on_event)
                    sink.prepare_to_wait()
                    batch.append((call_id, conn.encode(m.Call(
                        call_id, method, wire_args, {}, opts.context, conn.shm.take_release())),
                        sink))
            if batch:
                conn.submit_batch(batch)
                pending.extend(sink for _, _, sink in batch)
            if not pending:
                return
            head = pending[0]
            conn.read_until(head)
            pending.popleft()
            yield head.result()

    def _callable(self, method: str) -> tuple[Connection, m.MethodInfo]:
        """The connection and the method's info, or why no call can be made (under _gate)."""
        conn = self._conn
        if conn is None or self._state not in ("ready", "reloading"):
            raise InvalidState(self._not_callable()) from self._failure
        info = self.methods.get(method)
        if info is None:
            if not isinstance(method, str):
                raise TypeError(f"method name must be a str, not {type(method).__name__}")
            raise MethodNotFound(method, sorted(self.methods))
        return conn, info

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
        if state != "ready" or conn is None:
            return Health(state, pid, 0, self.slots, self._detail)
        try:
            pong = conn.request(lambda seq: m.Ping(seq), (m.Pong,)).result(timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
            if self._state != "ready":
                return Health(self._state, pid, 0, self.slots, self._detail)
            return Health("failed", pid, 0, self.slots, f"no answer to a ping: {exc!r}")
        busy = pong.busy
        return Health("busy" if busy >= self.slots else "ready", pid, busy, self.slots)

    def stats(self) -> Stats:
        """Process and call counters, read on the host (no round trip)."""
        conn, proc = self._conn, self._proc
        if conn is None or proc is None:
            return Stats(None, None, 0, 0, 0, self.slots, 0.0)
        sent = conn.sent()
        alive = self._state in ("ready", "reloading", "stopping")
        return Stats(
            pid=proc.pid,
            rss=proc.rss_bytes() if alive else None,
            calls_served=conn.completed,
            busy=min(sent, self.slots),
            queued=conn.in_flight() - min(sent, self.slots),
            slots=self.slots,
            uptime=time.monotonic() - self._started_at if alive else 0.0,
        )

    def reload(self, config: dict[str, Any] | None = None) -> None:
        """Rebuild the target in the same process with a new ``config``: new calls wait,
        calls in flight finish, ``teardown()`` runs if defined, then the target is built
        again and ``setup(**config)`` runs. A failing setup raises SetupError and leaves
        the worker failed (stop it and start a new one). ``stop()`` may interrupt a reload
        whose setup hangs."""
        new_config = self.config if config is None else dict(config)
        with self._gate:
            with self._lifecycle:
                if self._state != "ready" or self._conn is None:
                    raise InvalidState(f"reload() on a worker that is {self._state}")
                self._state = "reloading"
                conn = self._conn
            # Not under _lifecycle: stop() must be able to end a setup that never returns.
            conn.wait_idle(None)
            reply = conn.request(lambda seq: m.Reload(seq, new_config),
                                 (m.Ready, m.SetupFailed)).result()
            with self._lifecycle:
                if self._state != "reloading":
                    raise InvalidState(f"the worker was {self._state} during reload()")
                if isinstance(reply, m.SetupFailed):
                    self.setup_logs = reply.setup_logs
                    err = _setup_error(self.target_name, reply)
                    self._fail(err)
                    raise err
                self.config = new_config
                self.methods = reply.methods
                self.setup_logs = reply.setup_logs
                self._state = "ready"

    def get_state(self) -> Any:
        """The target's state: calls its ``get_state()`` method."""
        return self.call("get_state")

    def set_state(self, state: Any) -> Any:
        """Restore the target's state: calls its ``set_state(state)`` method."""
        return self.call("set_state", state)

    def __repr__(self) -> str:
        return f"<corral.Worker {self.target_name} pid={self.pid} {self._state}>"


def _setup_error(target: str, msg: m.SetupFailed) -> SetupError:
    info = msg.error
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


@atexit.register
def _stop_live_workers() -> None:
    # A host that exits without stopping its workers still leaves nothing behind.
    for worker in list(_live_workers):
        try:
            worker.stop(grace=1.0)
        except Exception:  # noqa: BLE001
            pass
