"""The live workers of this process: who to drain on a signal and to stop at exit.

A Worker is registered once started and unregistered when stopped (weakly: a Worker
nobody holds is not kept alive by this). The signal handler (``host/signals.py``) uses
only the functions below: ``live()`` to drain, ``any_live()`` to decide, ``kill_all_now()``
when a second signal will not wait.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Any

_live: "weakref.WeakSet[Any]" = weakref.WeakSet()


def add(worker: Any) -> None:
    """``worker`` is running: drain it on a signal, stop it at exit."""
    _live.add(worker)


def discard(worker: Any) -> None:
    _live.discard(worker)


def live() -> list[Any]:
    """The workers running now (a snapshot)."""
    return list(_live)


def any_live() -> bool:
    return bool(_live)


def kill_all_now() -> None:
    """Kill every live worker's processes at once, with their process groups: no lock, no
    wait, so safe in a signal handler (``Worker.kill_now``)."""
    for worker in list(_live):
        worker.kill_now()


def stop_all(grace: float = 1.0) -> None:
    """Stop every live worker (at exit: a host that exits without stopping its workers
    still leaves nothing behind)."""
    for worker in list(_live):
        try:
            worker.stop(grace=grace)
        except Exception:  # noqa: BLE001 - the others are still stopped
            pass


if hasattr(os, "register_at_fork"):
    # A child forked by the host does not own its parent's workers: its exit must not
    # stop them (the sockets it inherited are closed there, host/process.py).
    os.register_at_fork(after_in_child=_live.clear)

atexit.register(stop_all)
