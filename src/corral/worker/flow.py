"""Output flow control in the worker: a streaming call sends at most its window of chunks
ahead of what the host has consumed.

The host puts the window on the ``Call`` (``Call.streams.window``, 0: no limit) and grants more
with ``Credit`` on the control channel as its caller reads chunks, so a slow consumer
holds a fast generator back instead of piling its chunks up in the host's memory. The
call's thread waits here between user code steps (never inside user code), and a cancel
wakes it: the runner then sees the cancel as it goes back into user code.
"""

from __future__ import annotations

import threading
from typing import Any


class Gate:
    """The credit of one streaming call: ``take()`` before each chunk goes out."""

    __slots__ = ("credit", "_cond", "_stopped", "_loop", "_waiter")

    def __init__(self, window: int):
        self.credit = window
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._loop: Any = None  # an async call's loop, while it awaits credit
        self._waiter: Any = None

    def take(self) -> None:
        """Take one credit, waiting for the host's grant; returns at once once stopped."""
        with self._cond:
            while self.credit <= 0 and not self._stopped:
                self._cond.wait()
            self.credit -= 1

    async def atake(self) -> None:
        """``take()`` for an async generator: awaits on the call's loop (task.cancel()
        interrupts it like any await)."""
        import asyncio

        while True:
            with self._cond:
                if self.credit > 0 or self._stopped:
                    self.credit -= 1
                    return
                self._loop = loop = asyncio.get_running_loop()
                self._waiter = waiter = loop.create_future()
            await waiter

    def grant(self, n: int) -> None:
        with self._cond:
            self.credit += n
            self._wake()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._wake()

    def _wake(self) -> None:
        self._cond.notify_all()
        waiter, loop = self._waiter, self._loop
        if waiter is not None:
            self._waiter = None
            loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


class Gates:
    """The gates of the calls streaming now, by call id (control thread: grant, stop;
    call threads: open, close)."""

    def __init__(self) -> None:
        self._gates: dict[int, Gate] = {}

    def open(self, call_id: int, window: int) -> Gate:
        gate = self._gates[call_id] = Gate(window)
        return gate

    def close(self, call_id: int) -> None:
        self._gates.pop(call_id, None)

    def grant(self, call_id: int, n: int) -> None:
        gate = self._gates.get(call_id)
        if gate is not None:  # (a late grant for a call that ended is nothing)
            gate.grant(n)

    def stop(self, call_id: int) -> None:
        gate = self._gates.get(call_id)
        if gate is not None:
            gate.stop()
