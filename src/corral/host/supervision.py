"""Supervision of a Worker's process: the current one, crashes, restarts, recycling, the RSS
watch, and the calls waiting out a restart.

::

    new ─start()─► starting ─Ready─► ready ◄──────────── restarting ◄─ crash (policy: again)
                      │                │ ▲  reload()        ▲   │           │
                      ▼                ▼ └─ reloading       │   ▼ launch    ▼ policy: give up
                    failed        max_calls / max_rss ──────┘  fails        failed
                                   (recycle: drain, stop, start)
    any state ─stop()─► stopping ─► stopped

``Supervisor`` is the base of ``Worker``: the methods here run on corral threads (the
connection's reader, the timer thread, a restart thread) and keep the Worker's state.

**Lock order.** Taken in this order, never the other way round:

1. ``Worker._gate`` (a call being sent; reload())
2. ``Worker._lifecycle`` (state changes: start, stop, restart, recycle)
3. ``_Deferred._lock`` (the calls waiting out a restart)
4. ``Connection._lock`` (the window and pending table), then its send locks
5. ``Worker._changed`` (a leaf: waiters for "no longer restarting")

A caller's future may complete (and its done callbacks run) while any of these is held:
``stop()`` fails the waiting calls under ``_lifecycle``. So a done callback must never
take a Worker's locks, and Pool never calls into a Worker while it holds its own lock
(Pool's lock comes after all of the above). The timer thread holds none of them.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any

from ..exceptions import (
    InvalidState,
    ProtocolError,
    WorkerCrashed,
    WorkerStopped,
    WorkerUnavailable,
)
from ..protocol import messages as m
from .calls import settle
from .policy import ExitMeaning, exit_meaning
from .process import describe_exit
from .supervisor import Crash
from .timers import timers

log = logging.getLogger("corral")

#: Seconds between two RSS checks of a worker with ``max_rss``.
RSS_CHECK_INTERVAL = 1.0


class WorkerState(enum.StrEnum):
    """A Worker's state (a str: ``worker.state == "ready"`` works)."""

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


NEW, STARTING, READY = WorkerState.NEW, WorkerState.STARTING, WorkerState.READY
RELOADING, RESTARTING = WorkerState.RELOADING, WorkerState.RESTARTING
STOPPING, STOPPED, FAILED = WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.FAILED
#: States in which calls go to the current process.
CALLABLE = frozenset({READY, RELOADING})


class Supervisor:
    """The supervision half of ``Worker`` (see the module docstring). Subclasses provide
    ``_launch()`` (a new process, Ready), ``target_name``, ``restart``, ``cancel_grace``,
    ``max_calls``, ``max_rss``, ``methods`` and the locks."""

    _state: WorkerState

    def _install(self, proc: Any, conn: Any) -> None:
        """Make a ready process the one calls go to (under _lifecycle)."""
        self._proc, self._conn = proc, conn
        self._calls_left = self.max_calls or 1 << 62  # calls this process may still take
        conn.start(proc.pid)
        if self.max_rss is not None:
            self._watch_rss(proc)

    def _on_broken(self, proc: Any, error: BaseException | None) -> BaseException:
        """Called once by a process's connection when its channel ends or breaks: reap it,
        say what happened (the error every call in flight gets) and decide what next."""
        retired = proc.pid in self._retired
        self._retired.discard(proc.pid)
        current = proc is self._proc and self._state not in (STOPPING, STOPPED)
        if error is None:
            code = proc.wait(2.0)
            if code is None:  # it closed its socket but lives on: that is broken too
                proc.kill()
                code = proc.wait(None)
            proc.kill_group()  # whatever it started dies with it
            text, sig = describe_exit(code)
            reason = self._kill_reason.pop(proc.pid, None)
            meaning, counts = exit_meaning(current, retired, reason)
            if meaning is ExitMeaning.STOPPED:
                return WorkerStopped(f"worker {proc.pid} was stopped before the call finished",
                                     pid=proc.pid)
            what = f"{reason}; {text}" if reason else f"died: {text}"
            err = WorkerCrashed(f"worker {proc.pid} ({self.target_name}) {what}", pid=proc.pid,
                                exitcode=code, signal_name=sig, stderr=proc.stderr_tail())
            if counts:
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
        self._state = RESTARTING
        self._detail = f"restarting in {delay:.2f} s after: {crash.reason}"
        log.warning("corral: worker %s (%s) %s; restarting in %.2f s", crash.pid,
                    self.target_name, crash.reason, delay)
        timers.schedule(delay, lambda: threading.Thread(
            target=self._restart, name="corral-restart", daemon=True).start())

    def _restart(self) -> None:
        """Start a new process for a restart or a recycle, then send what waited."""
        with self._lifecycle:
            if self._state != RESTARTING:
                return  # stopped meanwhile
            old = self._proc
        if old is not None:
            self._conn.close(WorkerStopped(f"worker {old.pid} was replaced", pid=old.pid))
            old.close()
        try:
            proc, conn = self._launch()
        except BaseException as exc:  # noqa: BLE001
            with self._lifecycle:
                if self._state != RESTARTING:
                    return
                self._crashed(Crash(time.time(), None, None, None,
                                    f"restart failed: {str(exc).splitlines()[0]}"))
            return
        with self._gate, self._lifecycle:
            if self._state != RESTARTING:
                proc.kill()
                conn.close(InvalidState("the worker was stopped while restarting"))
                proc.close()
                return
            self._install(proc, conn)
            self._state = READY
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
                if self._state == READY and conn is not None and not conn.cancels_pending:
                    failed = self._deferred.flush(self)
            _fail_sinks(failed)

        # (always: a call may be joining the queue right now, under the gate)
        threading.Thread(target=flush, name="corral-flush", daemon=True).start()

    def _overdue(self, proc: Any, call_id: int) -> None:
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

    def _recycle_soon(self, proc: Any, why: str) -> None:
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
            if self._state != READY:
                return
            self._state = RESTARTING
            self._detail = f"recycling after {why}"
            proc, conn = self._proc, self._conn
            assert proc is not None and conn is not None
            self._retired.add(proc.pid)
            self._recycles += 1
        log.info("corral: recycling worker %s (%s) after %s", proc.pid, self.target_name, why)
        threading.Thread(target=self._retire, args=(proc, conn), name="corral-recycle",
                         daemon=True).start()

    def _retire(self, proc: Any, conn: Any) -> None:
        conn.wait_idle(None)
        try:
            conn.send_control(m.Shutdown(self.cancel_grace))
        except OSError:
            pass
        if proc.wait(self.cancel_grace + 2.0) is None:
            proc.terminate(2.0)
        self._restart()

    def _watch_rss(self, proc: Any) -> None:
        def check() -> None:
            if proc is not self._proc or self._state in (STOPPING, STOPPED, FAILED):
                return
            rss = proc.rss_bytes()
            if rss is not None and rss > self.max_rss and self._state == READY:
                self._recycle_soon(proc, f"max_rss ({rss} bytes > {self.max_rss})")
                return
            self._rss_timer = timers.schedule(RSS_CHECK_INTERVAL, check)

        self._rss_timer = timers.schedule(RSS_CHECK_INTERVAL, check)

    def _fail(self, err: BaseException) -> None:
        self._state = FAILED
        self._failure = err
        self._detail = str(err).split("\n", 1)[0]
        self._deferred.fail_all(err)
        self._notify_changed()

    def _notify_changed(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait_while_restarting(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._state != RESTARTING)


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

    def flush(self, worker: Any) -> list[tuple[Any, BaseException]]:
        """Send the waiting calls, in order, as far as the new process may take them (it
        may be recycled again after ``max_calls``). Returns the calls that could not be
        sent, with why: the caller fails them once it holds no lock."""
        failed = []
        with self._lock:
            while self._calls and worker._state == READY:
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


def _fail_sinks(failed: list[tuple[Any, BaseException]]) -> None:
    for sink, error in failed:
        if sink._timer is not None:
            sink._timer.cancel()
        settle(sink, error=error)
