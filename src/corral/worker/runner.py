"""Run calls on the worker's slots.

Admission: at most ``slots`` calls run at once; calls that arrive beyond that wait here, in
arrival order, and start as running ones finish. The host may send calls ahead of free
slots so that the socket never sits idle between calls (pipelining).

Where a call runs:

* sync and generator methods with ``slots == 1`` run inline on the main thread, which also
  reads the data socket: no thread hand-off on the hot path;
* sync methods with ``slots > 1`` run on a pool of ``slots`` threads;
* async methods and async generators run as tasks on one event loop thread.
"""

from __future__ import annotations

import threading
import time
from _queue import SimpleQueue  # (what queue.SimpleQueue is, without queue.py: cold start)
from collections import deque
from threading import get_ident
from typing import Any, Callable

from ..protocol import messages as m
from ..protocol.values import PLAIN_TYPES, to_wire
from .cancel import CallCancelled, cancel, leave_user_code
from .capture import Capture
from .errors import error_info
from .flow import Gates
from .instream import Inputs
from .loader import Loaded, Method
from .scope import Scope, _current


class Runner:
    def __init__(self, slots: int, send: Callable[[Any], Any], capture: Capture,
                 allow_pickle: bool, exporter: Any = None,
                 flush_releases: Callable[[], None] = lambda: None,
                 take_release: Callable[[], Any] = lambda: None,
                 reply: Callable[[Any], Any] | None = None,
                 reply_soon: Callable[[Any, Any], Any] | None = None):
        self.slots = slots
        self.loaded: Loaded | None = None
        self._send = send
        self._reply = reply or send  # a sync call's Done (replies.py may hold it)
        # an async call's Done, sent from the loop thread (replies.py holds it for the loop)
        self._reply_soon = reply_soon or (lambda msg, loop: send(msg))
        self._capture = capture
        self._allow_pickle = allow_pickle
        self._exporter = exporter
        self._flush_releases = flush_releases
        self._take_release = take_release
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._idle_waiters = 0
        self._running: dict[int, Scope] = {}  # admitted calls, started or about to start
        self._last_seen = 0  # the host sends calls in id order
        self._early_cancels: set[int] = set()
        self._admitted = 0
        self._waiting: deque[m.Call] = deque()
        self._inline = slots == 1
        self._pool: SimpleQueue | None = None
        self._loop: Any = None
        # Async calls waiting to become tasks: handed to the loop in batches, with one
        # wake-up of its thread per batch instead of one call_soon_threadsafe per call.
        self._inbox: deque[tuple[m.Call, Method, Scope]] = deque()
        self._inbox_scheduled = False
        self._loop_tid: int | None = None
        self._loop_reads = False  # the loop's thread reads the data socket (read_on_loop)
        #: Output credit of streaming calls (flow.py) and their streamed inputs (instream.py).
        self.gates = Gates()
        self.inputs = Inputs(send, take_release)

    # -- admission ------------------------------------------------------------------------

    def busy(self) -> int:
        # Not _admitted: a call leaves _running before its reply goes out, so a host that
        # has the reply never hears that the call still keeps its slot busy.
        return len(self._running)

    def on_call(self, call: m.Call) -> None:
        """Called by the main thread for every Call read from the data socket."""
        with self._lock:
            self._last_seen = call.id
            if self._early_cancels and call.id in self._early_cancels:
                self._early_cancels.discard(call.id)
                self._send(_cancelled(call.id))
                return
            if call.streams is not None and call.streams.inputs:
                self.inputs.open(call)  # (its chunks may come before it runs)
            if self._admitted >= self.slots:
                self._waiting.append(call)
                return
            self._admitted += 1
            scope = self._running[call.id] = Scope(call.id, call.method, call.context, self._send)
        self._start(call, scope, inline=self._inline)

    def _finished(self) -> None:
        with self._lock:
            if self._waiting:
                call = self._waiting.popleft()
                scope = self._running[call.id] = Scope(call.id, call.method, call.context,
                                                       self._send)
            else:
                self._admitted -= 1
                if self._admitted == 0 and self._idle_waiters:
                    self._idle.notify_all()
                return
        self._start(call, scope, inline=False)

    def cancel(self, call_id: int) -> None:
        """Called by the control thread for a Cancel: stop the call wherever it is. A call
        that already finished needs nothing; one not read yet is failed when it arrives
        (the control channel can overtake the data channel)."""
        with self._lock:
            scope = self._running.get(call_id)
            if scope is None:
                for call in self._waiting:
                    if call.id == call_id:
                        self._waiting.remove(call)
                        self.inputs.close(call_id)
                        self._send(_cancelled(call_id))
                        return
                if call_id > self._last_seen:
                    self._early_cancels.add(call_id)
                return
        cancel(scope)
        self.gates.stop(call_id)  # a call waiting for credit or for input wakes, and stops
        self.inputs.cancel(call_id)

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no call is running or waiting (True), or the timeout passes (False)."""
        with self._lock:
            self._idle_waiters += 1
            try:
                return self._idle.wait_for(lambda: self._admitted == 0, timeout)
            finally:
                self._idle_waiters -= 1

    def fd_target(self) -> Scope | None:
        """The call that owns fd-level output right now: the only running one, if any."""
        scopes = list(self._running.values())  # one C call: safe while slots mutate it
        return scopes[0] if len(scopes) == 1 else None

    def all_async(self) -> bool:
        """Whether every method of the loaded target is async (and there is one)."""
        methods = self.loaded.methods if self.loaded is not None else None
        return bool(methods) and all(meth.is_async for meth in methods.values())

    def read_on_loop(self) -> Any:
        """The event loop's thread reads the data socket from now on (``all_async``): the
        loop that async setup ran on, or a new one. Its calls become tasks at once. A sync
        method (none now; a reload could bring one) would run on a slot thread, never on
        the loop's."""
        loop = self._ensure_loop()
        self._inline = False
        self._loop_reads = True
        return loop

    def _start(self, call: m.Call, scope: Scope, inline: bool) -> None:
        loaded = self.loaded
        method = loaded.methods.get(call.method) if loaded is not None else None
        if method is None:
            self._running.pop(call.id, None)
            self._send(m.Failed(call.id, m.ErrorInfo("corral.MethodNotFound", call.method,
                                                     kind="method")))
            self._finished()
        elif method.is_async:
            scope._loop = loop = self._loop or self._ensure_loop()
            self._inbox.append((call, method, scope))
            if self._loop_reads and get_ident() == self._loop_tid:
                self._spawn_tasks()  # read on the loop: a task now, in arrival order
                return
            # (set before the drain clears it, read before the drain pops: a call appended
            # while a drain runs is either popped by it or schedules the next one)
            if not self._inbox_scheduled:
                self._inbox_scheduled = True
                loop.call_soon_threadsafe(self._spawn_tasks)
        elif inline and (call.streams is None or not call.streams.inputs):
            # (a call with streamed inputs runs on a slot thread: this thread must go on
            # reading, to hand it its chunks)
            self._run_sync(call, method, scope)
        else:
            self._ensure_pool().put((call, method, scope))

    # -- sync -----------------------------------------------------------------------------

    def _ensure_pool(self) -> SimpleQueue:
        with self._lock:
            if self._pool is None:
                self._pool = SimpleQueue()
                for i in range(self.slots):
                    threading.Thread(target=self._pool_thread, name=f"corral-slot-{i}",
                                     daemon=True).start()
            return self._pool

    def _pool_thread(self) -> None:
        assert self._pool is not None
        while True:
            call, method, scope = self._pool.get()
            try:
                self._run_sync(call, method, scope)
            except CallCancelled:
                pass  # armed just as the call ended: it was reported already
            del call, method, scope  # collect the call's big arguments, then say so
            self._flush_releases()

    def _run_sync(self, call: m.Call, method: Method, scope: Scope) -> None:
        # The hot path of every call: keep it lean (see docs/architecture.md).
        scope._tid = get_ident()
        _current.set(scope)
        send = self._send
        try:
            t0 = time.perf_counter()
            if call.convert:
                call.kwargs = method.inputs.convert(call.kwargs)
            try:
                scope._in_user = True
                if scope._requested:
                    raise CallCancelled()
                result = method.fn(*call.args, **call.kwargs)
            except TypeError as exc:
                self._reraise_as_arguments_error(exc, call, method)
                raise
            finally:
                leave_user_code(scope)
            if method.streams:
                it = iter(result)
                result = None
                gate = self.gates.open(call.id, call.streams.window) \
                    if call.streams is not None and call.streams.window else None
                while True:
                    try:
                        scope._in_user = True
                        if scope._requested:  # (cancelled while it was out of user code)
                            raise CallCancelled()
                        item = next(it)
                    except StopIteration:
                        break
                    finally:
                        leave_user_code(scope)
                    if gate is not None:
                        gate.take()  # (outside user code: a cancel wakes it, and stops)
                    send(m.Chunk(call.id, self._wire(item, call, "a chunk streamed by")))
                it = None
            run_time = time.perf_counter() - t0
            value = self._wire(result, call, "the return value of")
            result = None  # (an echo's result is its argument: let both go)
            self._leave(scope)
            self._reply(m.Done(call.id, value, run_time, self._release_args(call)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            self._fail(scope, call, exc)
        finally:
            if call.streams is not None:
                self.gates.close(call.id)
                self.inputs.close(call.id)
            self._finished()

    # -- async ----------------------------------------------------------------------------

    def _ensure_loop(self) -> Any:
        with self._lock:
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    self._loop_tid = get_ident()
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="corral-loop", daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine on the worker's loop and wait for it (used by async setup)."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop()).result()

    def _spawn_tasks(self) -> None:
        self._inbox_scheduled = False
        inbox, create_task = self._inbox, self._loop.create_task
        while inbox:
            call, method, scope = inbox.popleft()
            task = scope._task = create_task(self._run_async(call, method, scope))
            task.add_done_callback(self._task_done)

    def _task_done(self, _task: Any) -> None:
        self._flush_releases()

    async def _run_async(self, call: m.Call, method: Method, scope: Scope) -> None:
        _current.set(scope)
        send = self._send
        try:
            t0 = time.perf_counter()
            # (cancel.py's _cancel_task runs on this loop too: before this line it only
            # sets _requested, after it it cancels the task)
            scope._started = True
            if scope._requested:
                raise CallCancelled()
            if call.convert:
                call.kwargs = method.inputs.convert(call.kwargs)
            try:
                result = method.fn(*call.args, **call.kwargs)
            except TypeError as exc:
                self._reraise_as_arguments_error(exc, call, method)
                raise
            if method.streams:
                gate = self.gates.open(call.id, call.streams.window) \
                    if call.streams is not None and call.streams.window else None
                async for item in result:
                    if gate is not None:
                        await gate.atake()
                    send(m.Chunk(call.id, self._wire(item, call, "a chunk streamed by")))
                result = None
            else:
                result = await result
            run_time = time.perf_counter() - t0
            value = self._wire(result, call, "the return value of")
            result = None  # (an echo's result is its argument: let both go)
            self._leave(scope)
            self._reply_soon(m.Done(call.id, value, run_time, self._release_args(call)),
                             self._loop)
        except BaseException as exc:  # noqa: BLE001
            self._fail(scope, call, exc)
        finally:
            if call.streams is not None:
                self.gates.close(call.id)
                self.inputs.close(call.id)
            self._finished()

    # -- shared ---------------------------------------------------------------------------

    def _release_args(self, call: m.Call) -> Any:
        """Drop the call's arguments now, so that the leases of its big ones end (unless the
        target kept them) and ride on the reply instead of a message of their own."""
        if call.args or call.kwargs:
            call.args = []
            call.kwargs = {}
        return self._take_release()

    def _wire(self, value: Any, call: m.Call, what: str) -> Any:
        """A result or chunk ready for the frame (plain values as they are: the hot path)."""
        if type(value) in PLAIN_TYPES:
            return value
        return to_wire(value, allow_pickle=self._allow_pickle, exporter=self._exporter,
                       where=f"{what} {call.method}()")

    def _leave(self, scope: Scope) -> None:
        # Everything the call wrote, at the Python or the fd level, goes out before its result.
        self._capture.drain()
        if scope._partial:
            scope.flush_partial()
        self._running.pop(scope.id, None)
        _current.set(None)

    def _fail(self, scope: Scope, call: m.Call, exc: BaseException) -> None:
        """Report a failed call. Must not raise: the caller waits for this Failed."""
        try:
            if self._running.get(call.id) is scope:
                self._leave(scope)
        except BaseException:  # noqa: BLE001 - still report the call's own error
            self._running.pop(call.id, None)
            _current.set(None)
        if scope._requested:  # whatever it raised on the way out: the host cancelled it
            try:
                self._send(_cancelled(call.id))
            except OSError:
                pass
            return
        kind = getattr(exc, "_corral_kind", "user")
        try:
            info = error_info(exc, skip_frames=0 if kind != "user" else 1, kind=kind)
        except BaseException as broken:  # noqa: BLE001
            info = m.ErrorInfo("corral.InternalError", f"cannot describe the error: {broken!r}")
        try:
            self._send(m.Failed(call.id, info))
        except OSError:
            pass  # the host is gone
        except Exception:  # noqa: BLE001 - e.g. a message msgpack cannot hold (lone surrogate)
            try:
                self._send(m.Failed(call.id, _printable(_shrink(info))))
            except OSError:
                pass

    @staticmethod
    def _reraise_as_arguments_error(exc: TypeError, call: m.Call, method: Method) -> None:
        """A TypeError raised by the call itself (not inside the method's body) means the
        arguments do not fit: say so with the signature instead of a bare TypeError."""
        tb = exc.__traceback__
        if tb is None or tb.tb_next is not None:
            return
        try:
            import inspect  # only on this error path: not on the start path (cold start)

            inspect.signature(method.fn).bind(*call.args, **call.kwargs)
        except TypeError as bind_error:
            err = TypeError(str(bind_error))
            err._corral_kind = "arguments"  # type: ignore[attr-defined]
            raise err from None
        except ValueError:
            return


def _cancelled(call_id: int) -> m.Failed:
    return m.Failed(call_id, m.ErrorInfo("corral.Cancelled", f"call {call_id} was cancelled",
                                         kind="cancelled"))


def _shrink(info: m.ErrorInfo, limit: int = 1 << 16) -> m.ErrorInfo:
    """``info`` with its texts cut to ``limit`` characters (a message holding a huge value
    must still fit in a frame)."""

    def cut(text: str) -> str:
        return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"

    return m.ErrorInfo(cut(info.type), cut(info.message), cut(info.traceback),
                       _shrink(info.cause, limit) if info.cause else None,
                       _shrink(info.context, limit) if info.context else None, info.kind,
                       exceptions=[_shrink(e, limit) for e in info.exceptions]
                       if info.exceptions else None)


def _printable(info: m.ErrorInfo) -> m.ErrorInfo:
    """``info`` with every string made encodable (lone surrogates escaped)."""

    def fix(text: str) -> str:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

    return m.ErrorInfo(fix(info.type), fix(info.message), fix(info.traceback),
                       _printable(info.cause) if info.cause else None,
                       _printable(info.context) if info.context else None, info.kind,
                       exceptions=[_printable(e) for e in info.exceptions]
                       if info.exceptions else None)
