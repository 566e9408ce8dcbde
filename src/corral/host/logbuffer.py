"""Bounded log keeping: a call's (or a prediction's) log lines cost at most ``max_bytes``.

A model that floods stdout (a C library printing in a loop for seconds) must not grow the
host without bound. Both classes here keep the newest lines, drop the oldest first, and
say so with one marker line in their place::

    [corral: 1234567 bytes (20576 lines) of older log output dropped; the last 1048576 kept]

``LogBuffer`` keeps text lines (the HTTP server's prediction record); ``EventLog`` keeps a
call's events in order (``Log``, ``Progress``, ``Metric``: what ``future.events`` lists),
capping only the Log events' text. Appending is amortized O(1): lines sit in a deque.
The cap is ``max_bytes`` (UTF-8 bytes), default ``CORRAL_MAX_LOG_BYTES`` or 1 MiB; 0 keeps
nothing but the count.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterator

from ..protocol import messages as m

DEFAULT_MAX_LOG_BYTES = 1024 * 1024
MAX_LOG_BYTES_ENV = "CORRAL_MAX_LOG_BYTES"


def default_max_log_bytes() -> int:
    """``CORRAL_MAX_LOG_BYTES`` when set (bytes), else 1 MiB."""
    text = os.environ.get(MAX_LOG_BYTES_ENV)
    if not text:
        return DEFAULT_MAX_LOG_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_LOG_BYTES_ENV} must be a number of bytes, not {text!r}") \
            from None
    return max(value, 0)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def marker(dropped_bytes: int, dropped_lines: int, max_bytes: int) -> str:
    return (f"[corral: {dropped_bytes} bytes ({dropped_lines} lines) of older log output "
            f"dropped; the last {max_bytes} kept]\n")


def _tail(text: str, max_bytes: int) -> str:
    """The end of ``text`` within ``max_bytes`` (a line longer than the whole cap)."""
    if max_bytes <= 0:
        return ""
    cut = text[-max_bytes:]
    while _size(cut) > max_bytes:
        cut = cut[1:]
    return cut


class LogBuffer:
    """Log lines, the newest ``max_bytes`` of them kept. ``dropped_bytes`` and
    ``dropped_lines`` count what went."""

    __slots__ = ("max_bytes", "_lines", "_size", "dropped_bytes", "dropped_lines", "_text")

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = default_max_log_bytes() if max_bytes is None else max_bytes
        self._lines: collections.deque[str] = collections.deque()
        self._size = 0
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._text: str | None = ""  # the joined text, until the next append

    def append(self, line: str) -> None:
        n = _size(line)
        if n > self.max_bytes:  # longer than the cap alone: its end, and nothing else
            self.dropped_bytes += self._size + n - self.max_bytes
            self.dropped_lines += len(self._lines)
            self._lines.clear()
            line = _tail(line, self.max_bytes)
            n = _size(line)
        self._lines.append(line)
        self._size += n
        lines = self._lines
        while self._size > self.max_bytes:
            old = lines.popleft()
            gone = _size(old)
            self._size -= gone
            self.dropped_bytes += gone
            self.dropped_lines += 1
        self._text = None

    def lines(self) -> list[str]:
        """The kept lines, after the marker line when some were dropped."""
        head = [self.marker()] if self.dropped_bytes else []
        return head + list(self._lines)

    def marker(self) -> str:
        return marker(self.dropped_bytes, self.dropped_lines, self.max_bytes)

    def text(self) -> str:
        """Every kept line joined (made once per change)."""
        if self._text is None:
            self._text = "".join(self.lines())
        return self._text

    def __len__(self) -> int:
        return len(self._lines)


class EventLog:
    """A call's events in arrival order, a sequence like a list, where the Log events'
    text is capped at ``max_bytes``: the oldest Log events go first, and one marker Log
    stands where they were (after the older Progress/Metric events, which are kept)."""

    __slots__ = ("max_bytes", "_early", "_items", "_log_bytes", "dropped_bytes",
                 "dropped_lines", "_call_id")

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = default_max_log_bytes() if max_bytes is None else max_bytes
        self._early: list[Any] = []  # non-Log events older than every kept Log
        self._items: collections.deque[Any] = collections.deque()
        self._log_bytes = 0
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._call_id = 0

    def append(self, event: Any) -> None:
        if type(event) is not m.Log:
            self._items.append(event)
            return
        self._call_id = event.id
        n = _size(event.text)
        if n > self.max_bytes:
            cut = _tail(event.text, self.max_bytes)
            self.dropped_bytes += n - _size(cut)
            event = m.Log(event.id, event.stream, cut)
            n = _size(cut)
        self._items.append(event)
        self._log_bytes += n
        items = self._items
        while self._log_bytes > self.max_bytes:
            old = items.popleft()
            if type(old) is m.Log:
                gone = _size(old.text)
                self._log_bytes -= gone
                self.dropped_bytes += gone
                self.dropped_lines += 1
            else:
                self._early.append(old)

    def __iter__(self) -> Iterator[Any]:
        yield from self._early
        if self.dropped_bytes:
            yield m.Log(self._call_id, "stderr",
                        marker(self.dropped_bytes, self.dropped_lines, self.max_bytes))
        yield from self._items

    def __len__(self) -> int:
        return len(self._early) + bool(self.dropped_bytes) + len(self._items)

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index]

    def __reversed__(self) -> Iterator[Any]:
        return reversed(list(self))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, (list, EventLog)) \
            else NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))
