"""One side's end of a host-worker connection, the same on both sides: the control and
data sockets, a frame reader and a frame writer on each, and the shared-memory link whose
news (``Release``) goes over the control channel when no other message will carry it.

The host's ``Connection`` and the worker's ``WorkerProcess`` each hold one; what differs
between them (who reads which channel on which thread, what a message means) stays in
those two.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .framing import FrameReader, FrameWriter
from .values import make_encoder

if TYPE_CHECKING:
    import socket


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
        #: Data frames decoded so far; the data reader counts each (``decoded``), since
        #: decoding is where a frame's references to shared memory are resolved.
        self.decoded = 0
        # Releases read on the control channel before the data frames sent ahead of them.
        self.deferred: list[Any] = []
        self._release_lock = threading.Lock()

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
            out = self.data_out
            try:
                if out.held:  # (they go first: the peer waits for them before applying it)
                    out.flush()
                release.after = out.sent
                self.control_out.send(release)
            except OSError:
                pass  # the peer is gone, and its segments with it

    def on_release(self, release: Any) -> None:
        """A Release read on the control channel (control reader's thread): applied once
        the data channel has delivered the frames the peer sent before it, which may still
        refer to these segments (each side reads the two channels on different threads)."""
        if release.after <= self.decoded:
            with self._release_lock:
                self.shm.apply(release)
            return
        with self._release_lock:
            self.deferred.append(release)
        self.apply_deferred()  # (the data reader may have caught up meanwhile)

    def apply_deferred(self) -> None:
        """Apply the deferred Releases the data channel has caught up with (the data
        reader calls it, after counting a frame, when ``deferred`` is not empty)."""
        with self._release_lock:
            frames, deferred = self.decoded, self.deferred
            while deferred and deferred[0].after <= frames:
                self.shm.apply(deferred.pop(0))
