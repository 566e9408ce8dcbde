"""How long finished prediction records are kept, so a long-running server does not grow
without bound.

``Retention.finished(pid)`` notes when a record ended; ``prune(records)`` (run when a
prediction is created and when one finishes: no timer) drops the finished records older
than ``seconds`` and then, while more than ``max_records`` are kept, the oldest finished
ones. Unfinished records are never dropped. ``clock`` is ``time.monotonic`` unless a test
gives its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

DEFAULT_SECONDS = 600.0
DEFAULT_MAX_RECORDS = 10_000


class Retention:
    def __init__(self, seconds: float = DEFAULT_SECONDS,
                 max_records: int = DEFAULT_MAX_RECORDS,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.max_records = max_records
        self.clock = clock
        self._ended: OrderedDict[str, float] = OrderedDict()  # pid -> when, oldest first

    def finished(self, pid: str) -> None:
        self._ended[pid] = self.clock()
        self._ended.move_to_end(pid)

    def prune(self, records: dict[str, Any]) -> list[str]:
        """Drop what is due from ``records``; the ids dropped."""
        dropped = []
        cutoff = self.clock() - self.seconds
        while self._ended:
            pid, when = next(iter(self._ended.items()))
            if when > cutoff and len(records) <= self.max_records:
                break
            del self._ended[pid]
            if records.pop(pid, None) is not None:
                dropped.append(pid)
        return dropped
