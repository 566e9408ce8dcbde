"""What bench_supervision.py runs in child processes.

Loaded by the corral worker as a target file and imported by ``ProcessPoolExecutor`` spawn
children. Only ``os`` and ``time`` at module level (the worker has both imported already),
so that the cold start measured with this target costs what a restart of it costs.
"""

import os
import time


def burn(n):
    """A CPU-bound call: a pure-Python loop of ``n`` additions (~2 ms for the n the
    benchmark calibrates). The ProcessPoolExecutor's task, and Supervised.burn's body."""
    x = 0
    for i in range(n):
        x += i
    return x


def noop():
    """The ProcessPoolExecutor's no-op task."""


class Supervised:
    """The target of every supervision measurement: ways to run long, and ways to die."""

    def noop(self):
        """Do nothing: the round trip that latencies are corrected by."""

    def burn(self, n):
        return burn(n)

    # -- ways to die --------------------------------------------------------------------

    def exit_stamped(self, path, code):
        """Write ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, so the host can compare
        it with its own) to ``path``, then end the process at once with ``os._exit``. The
        file is opened before the stamp is taken; the stamp costs one small write()."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, repr(time.perf_counter()).encode())
        os._exit(code)

    # -- ways to run long ---------------------------------------------------------------

    def sleep(self, seconds):
        """Blocked in a system call (``time.sleep``)."""
        time.sleep(seconds)
        return seconds

    def spin(self, seconds):
        """A pure-Python busy loop."""
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    async def asleep(self, seconds):
        """An async call waiting in ``asyncio.sleep``."""
        import asyncio

        await asyncio.sleep(seconds)
        return seconds

    def stuck_in_c(self):
        """A C loop that holds the GIL and never checks for signals: only a kill stops it."""
        return sum(range(10**12))
