"""Output flow control on the host: a streaming call's credit, given back as its caller
reads chunks.

A ``stream()``/``watch()`` of a generator method (and their async twins) puts the
Worker's ``stream_window`` on its ``Call``: the worker sends at most that many chunks
ahead (worker/flow.py). Each chunk the caller takes from its stream counts here; once
half a window has been taken, a ``Credit`` for them goes out on the control channel. So
at most a window of chunks waits in the host's memory, whatever the generator's pace.
"""

from __future__ import annotations

from typing import Any

from ..protocol import messages as m


class OutCredit:
    """The credit of one streaming call, kept by its stream (``sink._flow``)."""

    __slots__ = ("call_id", "window", "_send", "_taken", "_batch")

    def __init__(self, call_id: int, window: int, conn: Any = None):
        self.call_id = call_id
        self.window = window
        self._send = conn  # its Connection, once the call is on one
        self._taken = 0
        self._batch = max(1, window // 2)

    def bind(self, conn: Any) -> None:
        self._send = conn

    def took(self) -> None:
        """The caller took one chunk from the stream."""
        self._taken += 1
        if self._taken >= self._batch and self._send is not None:
            n, self._taken = self._taken, 0
            try:
                self._send.send_control(m.Credit(self.call_id, n))
            except OSError:
                return  # the worker is gone: the call fails through the connection
            # The chunks read so far may have freed shared memory: say so now, so that the
            # worker reuses those segments instead of making new ones for the next chunks.
            self._send.flush_releases()
