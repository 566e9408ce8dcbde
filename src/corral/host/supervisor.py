"""When to restart a worker that crashed: the restart policy and the crash history.

A crash is a worker process that ended while it was supposed to serve (killed by a signal,
the OOM killer, a segfault, ``os._exit``), or a restart whose setup failed. The worker is
restarted after a backoff that doubles with each crash in the window; once more than
``max_restarts`` crashes fall in ``window`` seconds it is given up for good and every call
raises WorkerUnavailable with the history. A process that breaks the protocol is killed
(that process is defunct) and counts as a crash: the policy decides whether it restarts.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import msgspec


class Restart(msgspec.Struct, frozen=True):
    """A worker's restart policy: ``Worker(target, restart=Restart(max_restarts=3))``.

    ``max_restarts`` crashes are forgiven within any ``window`` seconds; the next one
    makes the worker unavailable. The n-th crash in the window waits
    ``backoff * 2**(n-1)`` seconds (at most ``max_backoff``) before the restart.
    ``restart=False`` is ``Restart(max_restarts=0)``: the first crash is final.
    """

    max_restarts: int = 5
    window: float = 60.0
    backoff: float = 0.05
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"invalid restart policy: {self!r}")


class Crash(msgspec.Struct, frozen=True):
    """One crash: when (``time.time()``), which process, how it ended and what it said."""

    at: float
    pid: int | None
    exitcode: int | None
    signal_name: str | None
    reason: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at))
        return f"{stamp} pid {self.pid}: {self.reason}"


def restart_policy(restart: Any) -> Restart:
    if restart is True or restart is None:
        return Restart()
    if restart is False:
        return Restart(max_restarts=0)
    if isinstance(restart, Restart):
        return restart
    raise TypeError(f"restart must be True, False or a corral.Restart, not {restart!r}")


class CrashHistory:
    """The crashes of one worker, and what to do about the next one."""

    def __init__(self, policy: Restart, keep: int = 20):
        self.policy = policy
        self.crashes: deque[Crash] = deque(maxlen=keep)  # the history shown to people
        self._in_window: deque[float] = deque()  # when the crashes of the window happened
        self.restarts = 0

    def record(self, crash: Crash) -> float | None:
        """Record ``crash``; return the backoff before restarting, or None to give up."""
        self.crashes.append(crash)
        recent = self._in_window
        recent.append(crash.at)
        while crash.at - recent[0] > self.policy.window:
            recent.popleft()
        if len(recent) > self.policy.max_restarts:
            return None
        self.restarts += 1
        return min(self.policy.backoff * 2 ** (len(recent) - 1), self.policy.max_backoff)
