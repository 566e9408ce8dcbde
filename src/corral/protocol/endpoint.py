"""One side's end of a host-worker connection, the same on both sides: the control and
data sockets, a frame reader and a frame writer on each, and the shared-memory link whose
news (``Release``) goes over the control channel when no other message will carry it.

The host's ``Connection`` and the worker's ``WorkerProcess`` each hold one; what differs
between them (who reads which channel on which thread, what a message means) stays in
those two.
"""

from __future__ import annotations

import socket
from typing import Any

from .framing import FrameReader, FrameWriter
from .values import make_encoder


class Endpoint:
    """Readers and writers for ``control`` and ``data``, and (``link()``) the shared
    memory over ``fds``. ``max_frame`` bounds what is read; ``max_send`` what is sent
    (None: the sender checks sizes itself)."""

    def __init__(self, control: socket.socket, data: socket.socket, fds: socket.socket,
                 max_frame: int, max_send: int | None = None):
        self.control, self.data, self.fds = control, data, fds
        self.control_in = FrameReader(control, max_frame)
        self.data_in = FrameReader(data, max_frame)
        encoder = make_encoder()
        self.control_out = FrameWriter(control, encoder, max_send)
        self.data_out = FrameWriter(data, encoder, max_send)
        self.shm: Any = None

    def link(self, oob_threshold: int) -> Any:
        """The shared memory of this connection (``shm.Link``), once the threshold is
        known (the worker learns it from Init)."""
        from .shm import Link

        self.shm = Link(self.fds, oob_threshold)
        return self.shm

    def flush_releases(self) -> None:
        """Send the shared-memory news on its own (when no call or reply is about to carry
        it); a peer that is gone needs none."""
        shm = self.shm
        release = shm.take_release() if shm is not None else None
        if release is not None:
            try:
                self.control_out.send(release)
            except OSError:
                pass  # the peer is gone, and its segments with it
