"""Drain on SIGTERM and SIGINT: calls in flight finish before the host exits.

A host with live workers that is told to stop (``kill``, a container runtime, Ctrl-C) does
not drop the calls its workers are running. Instead:

1. The first SIGTERM or SIGINT starts a *drain*: every live Worker is stopped in parallel
   with ``Worker.stop(grace)`` (``grace`` from ``CORRAL_DRAIN_GRACE``, default 30 s), which
   refuses new calls (``InvalidState``) from the moment it begins, a thread hop after the
   signal, waits for the calls in flight, runs ``teardown()`` and ends the process. One
   warning on the ``corral`` logger says how many calls were in flight.
2. When every worker has stopped, the signal is delivered again, as if it had arrived
   now, to the handler that was there before ours: SIGINT raises KeyboardInterrupt in the
   main thread, SIGTERM ends the process with the default action (its exit status says
   SIGTERM; atexit handlers do not run, exactly as without corral).
3. A second SIGTERM or SIGINT during the drain is impatience: the workers are killed at
   once (their calls fail with ``WorkerCrashed``) and that signal acts as the default.

With no live worker a signal acts exactly as the default (KeyboardInterrupt; death by
SIGTERM).

Where our handler goes, and where not: ``install()`` runs in ``Worker.start()`` on the main
thread (Python only lets the main thread set handlers) and puts ours in place only where the
current handler is the default one (``SIG_DFL`` for SIGTERM, ``default_int_handler`` for
SIGINT). A handler the application set itself wins, one it sets later replaces ours, and an
ignored signal (``SIG_IGN``, as in a background job) stays ignored. A worker started from
another thread (``async with``) installs nothing, but is drained all the same once a main
thread start has installed the handlers.

How, and why not the obvious way:

- The Python-level handler runs on the main thread, which may be blocked in ``call()``
  reading the very reply the drain waits for, or may hold one of corral's locks at that
  instant. So the handler takes no lock and waits for nothing: it records the signal and
  passes it with ``queue.SimpleQueue.put`` (reentrant, safe in a signal handler) to a
  helper thread, ``corral-signals``, started once by ``install()``. Starting a thread from
  the handler instead could deadlock if the signal landed while the main thread held
  ``threading``'s own internal lock (inside another ``Thread.start()``, for one).
- Only the main thread may set a signal handler, so the helper thread cannot restore the
  default one. It delivers the signal again to the main thread with ``pthread_kill``, and
  our handler, seeing the drain finished, restores the previous handler and does what it
  would have done. ``pthread_kill`` rather than ``_thread.interrupt_main()``: the latter
  only sets a flag, and a main thread blocked in ``Event.wait()`` or ``Thread.join()``
  would not see it until that wait ended (possibly never); a real signal interrupts the
  blocking system call, and Python runs the handler.
- Whether a late second signal was impatience or came after the drain ended is settled by
  one atomic ``list.pop()`` on a claim token that both the handler and the helper thread
  try to take: exactly one of them acts.
- CPython runs a Python handler only when the main thread next executes bytecode, and a
  signal that lands after its last check but before it blocks in a system call (say, on
  its way back into ``recv`` after running a handler, once it has let go of the GIL) only
  sets a flag: the main thread sleeps on, and the handler waits for whatever wakes it. For
  the re-delivery that could mean a host that never ends, so the helper thread sends the
  signal again (after 50 ms, then doubling up to 1 s) until our handler has taken it. The
  helper checks and sends without letting go of the GIL, which the handler needs, so a copy
  goes only while the signal is untaken (the one exception: a handler that loses the GIL
  before its first line, exactly as the helper wakes, would raise a second
  KeyboardInterrupt). A signal of the user's that lands in that window waits likewise:
  a first one starts the drain only when the main thread wakes (blocked in ``call()``:
  when the reply comes), a second one during a drain takes effect at the latest when the
  drain ends.
- A forked child inherits our handlers but not the helper thread (nor the workers, whose
  host is its parent): there a signal acts as the default.

What a drain cannot do: a main thread busy in C code that holds the GIL runs no Python
handler until it returns (true of every Python signal handler); SIGKILL cannot be caught,
and then the workers end by themselves (PR_SET_PDEATHSIG, end of the control socket).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from . import registry

log = logging.getLogger("corral")

#: Seconds a drain waits for calls in flight, unless ``CORRAL_DRAIN_GRACE`` says otherwise.
DEFAULT_GRACE = 30.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_pid: int | None = None  # the process whose helper thread runs
_requests: "queue.SimpleQueue[_Drain]" = queue.SimpleQueue()
_drain: "_Drain | None" = None  # the drain under way; only the main thread sets it


class _Drain:
    __slots__ = ("signum", "claim", "finished", "delivered")

    def __init__(self, signum: int):
        self.signum = signum
        # Popped by whoever acts last: the helper thread (re-delivery) or an impatient
        # second signal (kill). list.pop is atomic under the GIL.
        self.claim = [True]
        self.finished = False  # the workers are stopped; the signal is being re-delivered
        self.delivered = False  # our handler has taken the re-delivery


def install() -> None:
    """Put the drain handler in place for SIGTERM and SIGINT where the default one is.
    Cheap and idempotent; does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if current is _handle or not _is_default(signum, current):
            continue
        _start_helper()
        try:
            signal.signal(signum, _handle)
        except ValueError:  # not the main interpreter
            return


def _is_default(signum: int, handler: Any) -> bool:
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler == signal.SIG_DFL


def _start_helper() -> None:
    global _pid, _requests, _drain
    if _pid == os.getpid():
        return
    # New ones in a forked child: its parent's queue and drain are not its own.
    _requests, _drain = queue.SimpleQueue(), None
    threading.Thread(target=_serve, args=(_requests,), name="corral-signals",
                     daemon=True).start()
    _pid = os.getpid()


def _handle(signum: int, frame: Any) -> None:
    """The handler, on the main thread: decide, hand over, return at once."""
    global _drain
    if os.getpid() != _pid:  # a forked child: no helper thread, and not its workers
        _act_as_default(signum, frame, restore=False)
        return
    drain = _drain
    if drain is None:
        if not registry.any_live():
            _act_as_default(signum, frame, restore=False)
            return
        drain = _drain = _Drain(signum)
        _requests.put(drain)
        return
    if drain.finished and signum == drain.signum:
        drain.delivered = True  # the helper thread's re-delivery (or one just like it)
        _drain = None
        _act_as_default(signum, frame, restore=True)
        return
    try:
        drain.claim.pop()
    except IndexError:
        # The drain ended an instant ago and its re-delivery of this very signal is on
        # its way: that one acts. Another signal acts now.
        if signum != drain.signum:
            _act_as_default(signum, frame, restore=True)
        return
    _drain = None  # impatient: do not wait for the calls
    _kill_workers()
    _act_as_default(signum, frame, restore=True)


def _act_as_default(signum: int, frame: Any, restore: bool) -> None:
    if signum == signal.SIGINT:
        if restore and signal.getsignal(signal.SIGINT) is _handle:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # the default action: the process ends here


def _kill_workers() -> None:
    # No lock, no wait: only what is safe in a signal handler (Worker.kill_now).
    registry.kill_all_now()


def _serve(requests: "queue.SimpleQueue[_Drain]") -> None:
    while True:
        drain = requests.get()
        try:
            _stop_all(drain)
        except BaseException:  # noqa: BLE001 - the signal must still be delivered
            log.exception("corral: draining the workers failed")
        try:
            drain.claim.pop()
        except IndexError:
            continue  # an impatient second signal took over
        drain.finished = True
        _redeliver(drain)


def _redeliver(drain: _Drain) -> None:
    main = threading.main_thread().ident
    pause = 0.05
    while True:
        # From the check to the send the GIL is not let go (no call in between where it
        # could be handed over), and the handler needs it to set `delivered`.
        if drain.delivered:
            return
        signal.pthread_kill(main, drain.signum)
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def _stop_all(drain: _Drain) -> None:
    workers = registry.live()
    grace = _grace()
    calls = sum(w.load for w in workers)  # sent, queued or waiting for a restart
    log.warning("corral: %s received: draining %d call%s in flight on %d worker%s "
                "(up to %gs) before the host exits", signal.Signals(drain.signum).name,
                calls, "" if calls == 1 else "s", len(workers),
                "" if len(workers) == 1 else "s", grace)
    threads = [threading.Thread(target=_stop, args=(w, grace), name=f"corral-drain-{w.pid}",
                                daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _stop(worker: Any, grace: float) -> None:
    try:
        worker.stop(grace)
    except Exception:  # noqa: BLE001 - the others are still drained
        log.exception("corral: stopping %r during the drain failed", worker)


def _grace() -> float:
    text = os.environ.get("CORRAL_DRAIN_GRACE")
    if text is None:
        return DEFAULT_GRACE
    try:
        grace = float(text)
        if grace < 0 or grace != grace:
            raise ValueError
    except ValueError:
        log.warning("corral: CORRAL_DRAIN_GRACE=%r is not a number of seconds >= 0; "
                    "using %gs", text, DEFAULT_GRACE)
        return DEFAULT_GRACE
    return grace
