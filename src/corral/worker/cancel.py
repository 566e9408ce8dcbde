"""Stop a running call from another thread: the worker's half of cancellation.

The host sends ``Cancel(id)`` on the control channel; the control thread calls
``Scope.cancel()``, which stops the call where it runs:

* an **async** call: ``task.cancel()`` on the worker's loop;
* a **sync** call on the worker's **main thread** (one slot, inline): a signal to the main
  thread. Its handler raises ``CallCancelled`` there, which also breaks a blocking system
  call such as ``time.sleep`` (EINTR) instead of waiting for it;
* a **sync** call on a **slot thread**: ``PyThreadState_SetAsyncExc`` raises
  ``CallCancelled`` at the thread's next bytecode; a blocking C call there (a sleep, a long
  native kernel) is not interrupted, and the host kills the worker after ``cancel_grace``.

Either exception must only ever land in the *user's* code, never in corral's own (a frame
half written to a socket would break the channel). So a call is *armed* only while its
thread is inside user code (``Scope._in_user``), at most once, and the runner disarms it
when user code returns: for a slot thread under ``ARM_LOCK``, clearing a pending async
exception; for the main thread the handler itself checks ``_in_user`` on that very thread,
so no lock is needed on the hot path. An exception that was armed and fires just after user
code returned lands in the runner's own ``try``, which reports the call as cancelled.

``CallCancelled`` is a BaseException (like asyncio's CancelledError), so that user code's
``except Exception`` does not swallow it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

#: The signal that interrupts a call running on the main thread. A real-time signal: the
#: classic SIGUSR1/2 are often taken by user libraries (profilers, faulthandler.register).
CANCEL_SIGNAL = signal.SIGRTMIN + 2 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2

ARM_LOCK = threading.Lock()
MAIN_THREAD = threading.main_thread().ident


class CallCancelled(BaseException):
    """Raised inside a call's code when the host cancels the call."""


#: The class raised in user code: CallCancelled, or a subclass that is also the target's
#: framework's own cancellation exception (Cog's: corral/cog/runtime.py).
RAISED: type[CallCancelled] = CallCancelled


def set_async_exc(tid: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``tid`` at its next bytecode (None clears a pending one)."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid),
                                               ctypes.py_object(exc) if exc else None)


def install_handler(current_scope: Any) -> None:
    """Install the main thread's cancel handler; ``current_scope()`` gives the scope of the
    call running on the main thread (it is called on the main thread)."""

    def handler(signum: int, frame: Any) -> None:
        scope = current_scope()
        if scope is not None and scope._in_user and scope._armed and not scope._fired:
            scope._fired = True
            raise RAISED()

    signal.signal(CANCEL_SIGNAL, handler)


def leave_user_code(scope: Any) -> None:
    """The call's thread leaves user code: no cancel exception may land after this."""
    if scope._tid == MAIN_THREAD:
        scope._in_user = False  # the handler checks this on this same thread
        return
    with ARM_LOCK:
        scope._in_user = False
        if scope._armed and not scope._fired:
            scope._fired = True
            set_async_exc(scope._tid, None)


def cancel(scope: Any) -> None:
    """Called on the control thread: stop ``scope``'s call where it runs (see above)."""
    loop = scope._loop
    if loop is not None:
        scope._requested = True
        loop.call_soon_threadsafe(_cancel_task, scope)
        return
    with ARM_LOCK:
        scope._requested = True
        if not scope._in_user or scope._armed:
            return  # not started yet (it checks _requested first) or already armed
        scope._armed = True
        if scope._tid == MAIN_THREAD:
            signal.pthread_kill(MAIN_THREAD, CANCEL_SIGNAL)
        else:
            set_async_exc(scope._tid, RAISED)


def _cancel_task(scope: Any) -> None:
    # On the loop thread, so ordered with the task's own first step (Runner._run_async).
    # A task that has not started must not be cancelled: the CancelledError would be thrown
    # in before its body runs, and the call would never report (nor free its slot). It
    # sees _requested when it starts instead.
    if scope._started and scope._task is not None:
        scope._task.cancel()
