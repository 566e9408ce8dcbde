"""``FakeRunner``: a complete Runner that runs its target's methods on threads of this
process. The worked example of the seam (``corral.host.caller``): a subclass of
CallSurface gets every call method, options, the async twins and the context managers,
and implements ``dispatch`` plus the lifecycle and introspection of the Protocol.

It lets the tests of everything above the seam (Pool's queue, timeouts, cancels, map,
retries) run without processes; ``crash()`` plays a process that died, ``kill()`` one
that failed for good.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
from collections import deque
from typing import Any

from corral.exceptions import (
    CallTimeout,
    InvalidState,
    WorkerCrashed,
    WorkerStopped,
    WorkerUnavailable,
)
from corral.host.caller import CallKind, CallOptions, CallSurface, Usage
from corral.host.calls import AsyncCallFuture, AsyncCallStream, CallFuture, CallStream, settle
from corral.host.supervisor import Crash
from corral.host.timers import timers
from corral.host.worker import Health, Stats
from corral.protocol import messages as m

_pids = itertools.count(100_000)


class FakeRunner(CallSurface):
    """Runs ``target`` (an object; a class is instantiated) in this process, ``slots``
    calls at once, the rest waiting in order. Pool-compatible constructor:
    ``FakeRunner(target, prefetch=..., slots=..., timeout=...)``."""

    def __init__(self, target: Any, *, slots: int = 1, prefetch: int = 0,
                 timeout: float | None = None, **ignored: Any):
        CallSurface.__init__(self)
        self.target = target
        self.target_name = f"fake:{getattr(target, '__name__', type(target).__name__)}"
        self.slots = slots
        self.prefetch = prefetch
        self.default_timeout = timeout
        self.methods: dict[str, m.MethodInfo] = {}
        self.started: list[tuple[str, tuple]] = []  # every call that began to run
        self._state = "new"
        self._pid: int | None = None
        self._obj: Any = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: deque = deque()  # (sink, fn, args, kwargs) not yet on a slot
        self._running: set = set()
        self._crashes: list[Crash] = []

    # -- the Protocol's properties -----------------------------------------------------------

    state = property(lambda self: self._state)
    pid = property(lambda self: self._pid)
    crashes = property(lambda self: list(self._crashes))
    capacity = property(lambda self: None)

    @property
    def load(self) -> int:
        return len(self._waiting) + len(self._running)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeRunner":
        if self._state != "new":
            raise InvalidState(f"start() on a runner that is {self._state}")
        target = self.target
        self._obj = target() if isinstance(target, type) else target
        for name, fn in inspect.getmembers(self._obj, callable):
            if not name.startswith("_"):
                kind = "generator" if inspect.isgeneratorfunction(fn) else "sync"
                self.methods[name] = m.MethodInfo(kind, str(inspect.signature(fn)))
        self._pid = next(_pids)
        self._state = "ready"
        return self

    def stop(self, grace: float = 10.0) -> None:
        with self._lock:
            self._state = "stopped"
            left = [entry[0] for entry in self._waiting] + list(self._running)
            self._waiting.clear()
            self._running.clear()
        for sink in left:
            settle(sink, error=WorkerStopped(f"fake {self._pid} was stopped", pid=self._pid))

    def crash(self) -> None:
        """The process died: every call fails with WorkerCrashed (those still waiting with
        ``sent`` False), and a new one takes over at once."""
        pid = self._pid
        with self._lock:
            left = [entry[0] for entry in self._waiting] + list(self._running)
            self._waiting.clear()
            self._running.clear()
            self._crashes.append(Crash(0.0, pid, -9, "SIGKILL", "died: killed by SIGKILL"))
            self._pid = next(_pids)
        for sink in left:
            settle(sink, error=WorkerCrashed(f"fake {pid} died", pid=pid))

    def kill(self) -> None:
        """It failed for good: calls fail with WorkerUnavailable and it takes no more."""
        with self._lock:
            self._state = "failed"
            left = [entry[0] for entry in self._waiting] + list(self._running)
            self._waiting.clear()
            self._running.clear()
        for sink in left:
            settle(sink, error=WorkerUnavailable(f"fake {self._pid} failed for good"))

    # -- the one entry point -----------------------------------------------------------------

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind) -> Any:
        if self._state != "ready":
            raise InvalidState(f"the runner is {self._state}; no more calls can be made")
        info = self.method_info(method)
        call_id = next(self._ids)
        on_event = options.on_event
        if kind is CallKind.ASUBMIT:
            sink: Any = AsyncCallFuture(call_id, method, info.streams, on_event,
                                        asyncio.get_running_loop())
        elif kind is CallKind.ASTREAM or kind is CallKind.AWATCH:
            sink = AsyncCallStream(call_id, method, info.streams, on_event,
                                   asyncio.get_running_loop(), events=kind.events)
        elif kind.streams:
            sink = CallStream(call_id, method, info.streams, on_event, events=kind.events)
        else:
            sink = CallFuture(call_id, method, info.streams, on_event)
        sink.worker = self
        sink._owner = self  # who cancel() asks (the CallRecord protocol)
        timeout = self.timeout_for(options)
        if timeout is not None:
            sink._timer = timers.schedule(timeout, lambda: sink._cancel_with(CallTimeout(
                f"call {call_id} ({method}) did not finish within {timeout:g} s", timeout)))
        with self._lock:
            self._waiting.append((sink, getattr(self._obj, method), args, kwargs))
        self._start_ready()
        if kind is CallKind.CALL:
            return sink.result()
        return sink

    def _start_ready(self) -> None:
        with self._lock:
            starting = []
            while self._waiting and len(self._running) < self.slots:
                entry = self._waiting.popleft()
                entry[0]._sent = True
                self._running.add(entry[0])
                starting.append(entry)
        for entry in starting:
            threading.Thread(target=self._run, args=entry, daemon=True).start()

    def _run(self, sink: Any, fn: Any, args: tuple, kwargs: dict) -> None:
        self.started.append((sink.method, args))
        try:
            value = fn(*args, **kwargs)
            if inspect.isgenerator(value):
                for chunk in value:
                    sink._chunk(chunk)
                value = None
            error = None
        except Exception as exc:  # noqa: BLE001 - the call's own error
            value, error = None, exc
        with self._lock:
            if sink not in self._running:
                return  # cancelled, crashed or stopped meanwhile: it was settled then
            self._running.discard(sink)
        if sink._timer is not None:
            sink._timer.cancel()
        settle(sink, value, 0.0, error)
        self._start_ready()

    def cancel(self, sink: Any, error: BaseException) -> bool:
        """Stop ``sink``'s call wherever it is (the owner protocol of host/calls.py)."""
        with self._lock:
            waiting = [e for e in self._waiting if e[0] is sink]
            if waiting:
                self._waiting.remove(waiting[0])
            elif sink in self._running:
                self._running.discard(sink)  # (its thread runs on; its result is dropped)
            else:
                return False
        if sink._timer is not None:
            sink._timer.cancel()
        settle(sink, error=error)
        self._start_ready()
        return True

    # -- introspection -----------------------------------------------------------------------

    def health(self, timeout: float = 5.0) -> Health:
        busy = len(self._running)
        status = self._state if self._state != "ready" or busy < self.slots else "busy"
        return Health(status, self._pid, busy, self.slots, "", len(self._crashes))

    def stats(self) -> Stats:
        busy = len(self._running)
        return Stats(self._pid, None, 0, busy, len(self._waiting), self.slots, 0.0,
                     len(self._crashes))

    def usage(self) -> Usage:
        return Usage(len(self._running), len(self._waiting), self.slots, len(self._crashes),
                     1 if self._state == "ready" else 0)

    def describe(self, timeout: float | None = 30.0) -> dict[str, Any]:
        return {name: m.MethodSchema() for name in self.methods}

    def reload(self, config: dict[str, Any] | None = None) -> None:
        pass
