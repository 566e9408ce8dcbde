"""Decisions as pure functions: what to do after a failure, which worker gets a call,
what a process's end means. No locks, no clocks, no processes: each is tested as a table
(tests/host/test_policy.py), and Pool and the supervision call them under their locks.
"""

from __future__ import annotations

import enum
from typing import Sequence

from ..exceptions import WorkerCrashed, WorkerUnavailable


class AfterFailure(enum.Enum):
    """What a Pool does with a call whose attempt failed."""

    FAIL = "fail"  #: the caller gets the error
    REQUEUE = "requeue"  #: it never reached a process: back to the head of the queue
    RETRY = "retry"  #: it ran on a worker that crashed, and may run again (idempotent)


def after_failure(error: BaseException | None, sent: bool, idempotent: bool,
                  retries: int, max_retries: int = 1) -> AfterFailure:
    """A call that never reached the crashed process (``sent`` False: refused by the
    broken connection, or waiting for a restart that gave up) never ran, so it is safe to
    send again, idempotent or not. One that was in flight runs again only if the caller
    marked it idempotent, ``max_retries`` times at most. Nothing else is retried: not
    user errors, Cancelled, CallTimeout, WorkerStopped (you stopped it), nor
    ProtocolError (the call's own result may be what broke the protocol)."""
    if isinstance(error, WorkerCrashed):
        if not sent:
            return AfterFailure.REQUEUE
        return AfterFailure.RETRY if idempotent and retries < max_retries else AfterFailure.FAIL
    if isinstance(error, WorkerUnavailable) and not sent:
        return AfterFailure.REQUEUE
    return AfterFailure.FAIL


def pick(usable: Sequence[bool], loads: Sequence[int], rooms: Sequence[int],
         avoid: int | None = None) -> int | None:
    """The worker that gets a call: among the usable ones with room (load below room),
    one other than ``avoid`` (where the call just crashed) if there is one, then the
    least loaded, then the first in order. None when none has room."""
    best = None
    best_key = None
    for i, ok in enumerate(usable):
        if not ok or loads[i] >= rooms[i]:
            continue
        key = (i == avoid, loads[i])
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


class ExitMeaning(enum.Enum):
    """What the end of a worker's process means (``exit_meaning``)."""

    STOPPED = "stopped"  #: ended because we stopped or replaced it: WorkerStopped
    KILLED = "killed"  #: killed by corral for a reason (a call ignored its cancel): a crash
    DIED = "died"  #: it ended by itself: a crash


def exit_meaning(current: bool, retired: bool, kill_reason: str | None
                 ) -> tuple[ExitMeaning, bool]:
    """What a process's end means, and whether it counts as a crash (the restart policy
    restarts the worker). ``current``: it was the process serving (not one being stopped
    or already replaced); ``retired``: it was being recycled (its replacement is under
    way, so it does not count); ``kill_reason``: corral killed it, and why."""
    if not current and not kill_reason:
        return ExitMeaning.STOPPED, False
    meaning = ExitMeaning.KILLED if kill_reason else ExitMeaning.DIED
    return meaning, current and not retired
