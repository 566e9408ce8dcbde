"""One thread that runs callbacks at given times: call deadlines, cancel grace periods,
restart backoff and resource checks for every worker of the process.

A call with a ``timeout`` schedules one entry and cancels it when it ends, which only marks
the entry; marked entries are dropped when they come up, or all at once when they make up
most of the heap, so a high rate of short calls with long timeouts keeps the heap small.
Callbacks run on the timer thread and must be quick: anything slow (a restart) starts its
own thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("corral")


class Timer:
    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], Any]):
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = None  # let go of what the callback holds (a call's sink)


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, fn: Callable[[], Any]) -> Timer:
        """Run ``fn()`` on the timer thread in ``delay`` seconds, unless cancelled first."""
        timer = Timer(time.monotonic() + delay, fn)
        with self._cond:
            heap = self._heap
            if len(heap) > 1024 and sum(1 for e in heap if e[2].cancelled) > len(heap) // 2:
                heap[:] = [e for e in heap if not e[2].cancelled]
                heapq.heapify(heap)
            heapq.heappush(heap, (timer.when, next(self._seq), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-timers",
                                                daemon=True)
                self._thread.start()
            elif heap[0][2] is timer:
                self._cond.notify()
        return timer

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while True:
                    while heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                    if not heap:
                        self._cond.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        timer = heapq.heappop(heap)[2]
                        break
                    self._cond.wait(delay)
            fn = timer.fn
            if fn is None or timer.cancelled:
                continue
            timer.cancel()
            try:
                fn()
            except Exception:  # noqa: BLE001 - one bad callback must not stop the others
                log.exception("corral timer callback failed")


#: The process's timer thread (started on first use).
timers = Timers()
