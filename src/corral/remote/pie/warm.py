"""Ready worker processes, per environment, so that a launch never waits for a start.

A :class:`WarmPool` owns one fork server (forking.py) for its interpreter and keeps
``size`` :class:`ProgramWorker` s through their handshake, the guest loaded, waiting for a
program. ``take()`` hands one out (a program runs in it once; it is never reused, so one
program cannot see another's leftovers) and a refill thread forks the next one. A fork plus
the handshake costs a few milliseconds, so the pool keeps up with back-to-back launches.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from ...host.worker import Worker
from .forking import Zygote

log = logging.getLogger("corral.pie")

GUEST = "corral.remote.pie.guest:Guest"
REFILL_THREADS = 2


class ProgramWorker(Worker):
    """A corral Worker running the guest, forked from a Zygote: one program, then gone."""

    def __init__(self, zygote: Zygote, **options: Any):
        super().__init__(GUEST, slots=2, restart=False, python=zygote.python, **options)
        self._zygote = zygote

    def _spawn_process(self) -> Any:
        return self._zygote.spawn(self.max_frame)

    def kill(self) -> None:
        """End the process now (a busy loop included), then release it as stop() does."""
        proc = self._proc
        if proc is not None:
            proc.kill_group()
            proc.kill()
        self.stop(grace=0.0)


class WarmPool:
    """``size`` ready ProgramWorkers for one interpreter and environment."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 size: int = 2):
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        self.size = size
        self._env = env
        self._zygote = Zygote(python, env)
        self._ready: collections.deque[ProgramWorker] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failures = 0
        # Two refill threads: a start is mostly waiting for the child, and two overlap.
        self._threads = [threading.Thread(target=self._refill, name=f"corral-pie-warm-{i}",
                                          daemon=True) for i in range(REFILL_THREADS)]
        self._starting = 0
        for t in self._threads:
            t.start()

    def _start_one(self) -> ProgramWorker:
        zygote = self._zygote
        if not zygote.alive:  # it died (killed, OOM): a new one for the next workers
            with self._cond:
                if self._zygote is zygote:
                    log.warning("the fork server for %s died; starting another",
                                zygote.python)
                    self._zygote = Zygote(zygote.python, self._env)
                    zygote.close()
                zygote = self._zygote
        w = ProgramWorker(zygote)
        w.start()
        return w

    def _refill(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or len(self._ready) + self._starting < self.size)
                if self._closed:
                    return
                self._starting += 1
            try:
                w = self._start_one()
            except Exception:  # noqa: BLE001 - logged; take() starts one itself and raises
                log.exception("could not pre-start a worker")
                with self._cond:
                    self._starting -= 1
                    self._failures += 1
                    self._cond.wait(min(5.0, 0.1 * 2 ** self._failures))
                continue
            with self._cond:
                self._starting -= 1
                self._failures = 0
                if self._closed:
                    stale = w
                else:
                    self._ready.append(w)
                    self._cond.notify_all()
                    continue
            stale.stop(0.0)

    def take(self) -> ProgramWorker:
        """A ready worker: a pre-started one, else one started now (a few ms)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the warm pool is closed")
            w = self._ready.popleft() if self._ready else None
            self._cond.notify_all()
        if w is not None and w.state == "ready":
            return w
        if w is not None:
            w.stop(0.0)
        return self._start_one()

    @property
    def ready(self) -> int:
        return len(self._ready)

    def wait_ready(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` workers are ready (tests, benchmarks)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ready) >= count, timeout)

    def close(self) -> None:
        """Stop the ready workers and the fork server (workers handed out are the
        caller's)."""
        with self._cond:
            self._closed = True
            ready, self._ready = list(self._ready), collections.deque()
            self._cond.notify_all()
        for t in self._threads:
            t.join(10.0)
        for w in ready:
            w.stop(0.0)
        self._zygote.close()
