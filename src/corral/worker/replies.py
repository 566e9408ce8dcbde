"""A worker answers a burst of calls with one write.

When the main thread finishes an inline call while the next call is already in the data
socket's buffer, the reply is held in the frame writer (``FrameWriter.send(hold=True)``)
instead of written: the replies of a burst of pipelined calls go out together, with one
system call and one wake-up of the host. A single call is answered at once (nothing else is
buffered). What is held is written:

* once ``HOLD_MAX`` replies are held: the host works on those while this side runs the
  rest of the burst (holding a whole burst made the two processes take turns, each idle
  while the other worked: pipelined submit() ran at half the rate);
* by the data loop, before it blocks reading (``flush``);
* with the next message any thread sends on the data socket (order is kept);
* by a watchdog thread ``HOLD_S`` after the first reply was held, should the next call take
  longer than that: a finished call's reply never waits for a slow one behind it (beyond
  ``HOLD_S`` plus, while the running call holds the GIL, the interpreter's switch interval).

The event loop thread that runs async calls holds their replies the same way
(``send_soon``): until the loop has run the callbacks that are ready, so that the async calls
of one burst, which finish in the same loop iteration, are answered with one write. The loop
writes them itself, one callback later, and the watchdog covers a loop that blocks first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: How long a held reply may wait for the calls behind it.
HOLD_S = 0.001
#: The most replies held for one write (benchmarks/README.md: 4 to 16 measured alike).
HOLD_MAX = 8


class Replies:
    def __init__(self, writer: Any, reader: Any):
        self._writer, self._reader = writer, reader
        self._main = threading.get_ident()  # the thread that reads the data socket
        # Set to wake the watchdog. An Event, not a held Lock: two threads ring (the main
        # thread and the event loop's), and a Lock released twice raises.
        self._bell = threading.Event()
        self._rung = False
        self._batch = 0  # counts held batches, so the watchdog knows its batch went out
        self._held = 0  # replies held now
        self._watchdog: threading.Thread | None = None
        self._start_lock = threading.Lock()  # the watchdog starts once
        self._loop_flush = False  # a flush is scheduled on the event loop (send_soon)

    def send(self, msg: Any) -> None:
        """Send a call's final reply, holding it when the next call is already here."""
        writer = self._writer
        if threading.get_ident() != self._main or not self._reader.has_frame():
            writer.send(msg)
            return
        empty = not writer.held
        held = 1 if empty else self._held + 1
        if held >= HOLD_MAX:
            writer.send(msg)  # (with the held ones, in one write)
            return
        self._held = held
        writer.send(msg, hold=True)
        if empty and writer.held:
            self._batch += 1
            self._ring()

    def send_soon(self, msg: Any, loop: Any) -> None:
        """Send a reply made on the event loop thread (an async call's): held until the loop
        has run the callbacks that are ready now, so that the replies of async calls that
        finish together go out in one write. Should the loop block first (a task calling
        ``time.sleep``), the watchdog writes it ``HOLD_S`` later."""
        writer = self._writer
        empty = not writer.held
        writer.send(msg, hold=True)
        if not writer.held:
            return  # too big to hold: written
        if not self._loop_flush:
            self._loop_flush = True
            loop.call_soon(self._flush_from_loop)
        if empty:
            self._batch += 1
        self._ring()

    def _flush_from_loop(self) -> None:
        self._loop_flush = False
        try:
            self.flush()
        except OSError:
            pass  # the host is gone: the data loop sees the end of its socket and exits

    def _ring(self) -> None:
        # (the main thread and the loop thread both ring: _batch and _rung race only in
        # when the watchdog looks, never in whether a held reply is written)
        if self._watchdog is None:
            with self._start_lock:
                if self._watchdog is None:
                    self._watchdog = threading.Thread(target=self._watch,
                                                      name="corral-replies", daemon=True)
                    self._watchdog.start()
        if not self._rung:
            self._rung = True
            self._bell.set()

    def flush(self) -> None:
        """Write what is held (the data loop, before it blocks reading)."""
        if self._writer.held:
            self._writer.flush()

    def _watch(self) -> None:
        # Rung once, it checks every HOLD_S while replies keep being held, and parks again
        # after a quiet HOLD_S: a burst of bursts costs it no wake-up per burst.
        writer = self._writer
        while True:
            self._bell.wait()
            self._bell.clear()  # (a ring lost here is harmless: the checks below follow)
            while True:
                batch = self._batch
                time.sleep(HOLD_S)
                if writer.held and self._batch == batch:
                    try:
                        writer.flush()
                    except OSError:
                        return  # the host is gone
                    continue
                if self._batch != batch:
                    continue  # busy: keep watching
                self._rung = False
                if self._batch == batch:
                    break  # quiet: park (the next held reply rings)
                self._rung = True  # held again just as it parked
