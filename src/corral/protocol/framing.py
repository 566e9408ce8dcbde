"""Length-prefixed frames over stream sockets.

A frame is a 4-byte little-endian length followed by that many bytes of msgpack. The
reader buffers: one ``recv`` may deliver many small frames (pipelined calls), and a frame
larger than the buffer is read straight into its own allocation. Frames above
``max_frame`` are refused from the header alone, before anything is allocated.

Reads and writes block, even on a descriptor that another library made non-blocking
(uvloop's ``add_reader`` does, for every thread): EAGAIN waits for the socket, as a
blocking call would, instead of cutting a frame in two or reading as a peer gone.

The protocol (and the worker, which makes its sockets from the descriptors it inherits)
uses ``_socket``, the C module under ``socket``: the methods are the same, and importing
``socket`` itself costs a worker ~3.5 ms of its cold start (it turns its constants into
enums, and imports ``selectors``), for nothing the protocol needs (issue 19).
"""

from __future__ import annotations

import _socket  # (not socket: see above)
import select
import struct
import threading
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import socket

HEADER = struct.Struct("<I")
#: Largest frame accepted by default. Big arrays and bytes travel out of band, so a bigger
#: frame means a peer that is broken or hostile.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_BUFFER_SIZE = 256 * 1024
#: Held frames are written once they reach this many bytes.
HOLD_BYTES = 64 * 1024


#: What ``FrameReader.read(nowait=True)`` returns when no whole frame has arrived yet.
NOT_READY = memoryview(b"")


def _wait_for(sock: socket.socket, events: int) -> None:
    poll = select.poll()  # (not select(): the descriptor may be numbered above 1023)
    poll.register(sock.fileno(), events)
    poll.poll()


def _recv_into(sock: socket.socket, view: memoryview) -> int:
    """``sock.recv_into(view)``, blocking whatever the descriptor's mode."""
    while True:
        try:
            return sock.recv_into(view)
        except BlockingIOError:
            _wait_for(sock, select.POLLIN)


def _send_all(sock: socket.socket, data: Any) -> None:
    """``sock.sendall(data)``, blocking whatever the descriptor's mode (sendall cannot say
    how much it sent before EAGAIN, so the rest could not be resent)."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data).cast("B")
    while sent < len(view):
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            _wait_for(sock, select.POLLOUT)


class FrameError(Exception):
    """A frame that breaks the framing rules: oversize, or cut off by end of stream."""


class TruncatedFrame(FrameError):
    """The stream ended inside a frame: the peer died (or hung up) while writing."""


class FrameReader:
    """Reads frames from one socket; not thread-safe (one reader thread per socket).

    ``read()`` returns a memoryview valid only until the next ``read()``: decode it first.
    """

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME):
        self._sock = sock
        self._max = max_frame
        self._buf = bytearray(_BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def has_frame(self) -> bool:
        """True when a whole frame is already buffered: ``read()`` will not block."""
        avail = self._end - self._start
        return avail >= 4 and avail - 4 >= HEADER.unpack_from(self._buf, self._start)[0]

    def read(self, nowait: bool = False) -> memoryview | None:
        """The next frame's body, or None at a clean end of stream (between frames).
        ``nowait``: NOT_READY instead of blocking while no whole frame is here (a frame
        bigger than the buffer is still read to its end once it has begun)."""
        buf, view = self._buf, self._view
        while True:
            start, end = self._start, self._end
            avail = end - start
            if avail >= 4:
                (size,) = HEADER.unpack_from(buf, start)
                if size > self._max:
                    raise FrameError(f"frame of {size} bytes exceeds the limit of {self._max} bytes")
                if avail - 4 >= size:
                    self._start = start + 4 + size
                    return view[start + 4 : start + 4 + size]
                if size + 4 > len(buf):
                    return self._read_large(size)
                if start + 4 + size > len(buf):
                    self._compact()
            elif start == end:
                self._start = self._end = 0
            elif len(buf) - start < 4:
                self._compact()
            if nowait:
                try:
                    got = self._sock.recv_into(view[self._end :], 0, _socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return NOT_READY
            else:
                try:
                    got = self._sock.recv_into(view[self._end :])
                except BlockingIOError:  # (made non-blocking by another: wait, as blocking)
                    _wait_for(self._sock, select.POLLIN)
                    continue
            if got == 0:
                if self._end == self._start:
                    return None
                raise TruncatedFrame(
                    f"stream ended inside a frame ({self._end - self._start} bytes of it received)"
                )
            self._end += got

    def _compact(self) -> None:
        avail = self._end - self._start
        self._buf[0:avail] = self._buf[self._start : self._end]
        self._start, self._end = 0, avail

    def _read_large(self, size: int) -> memoryview:
        frame = bytearray(size)
        fview = memoryview(frame)
        have = self._end - self._start - 4
        fview[:have] = self._view[self._start + 4 : self._end]
        self._start = self._end = 0
        while have < size:
            got = _recv_into(self._sock, fview[have:])
            if got == 0:
                raise TruncatedFrame(f"stream ended inside a frame ({have} of {size} bytes received)")
            have += got
        return fview


class FrameTooLarge(ValueError):
    """A message to send does not fit in one frame (``max_frame``)."""


class FrameWriter:
    """Encodes messages and writes them as frames; safe to share between threads.

    ``send(msg, hold=True)`` keeps the frame in the buffer instead of writing it: the next
    send (held or not past ``HOLD_BYTES``) or ``flush()`` writes every held frame with it,
    in order, in one system call (a worker answering a burst of calls).
    """

    def __init__(self, sock: socket.socket, encoder: msgspec.msgpack.Encoder,
                 max_frame: int | None = None):
        self._sock = sock
        self._encoder = encoder
        self._max_frame = max_frame
        self._lock = threading.Lock()
        self._buf = bytearray(_BUFFER_SIZE)
        #: Bytes of held frames at the start of the buffer (0: nothing held).
        self.held = 0
        #: Frames sent (or held to send) so far, in order: a Release's ``after``.
        self.sent = 0

    def send(self, msg: Any, hold: bool = False) -> int:
        """Encode and send one message (and whatever is held before it); returns the frame's
        size. Raises OSError when the peer is gone and whatever the encoder raises for an
        unencodable message."""
        with self._lock:
            buf = self._buf
            start = self.held
            self._encoder.encode_into(msg, buf, start + 4)
            size = len(buf) - start - 4
            if self._max_frame is not None and size > self._max_frame:
                # The peer would refuse it as a protocol violation: the message's sender
                # gets the error instead (a call's result too big fails that call).
                if start:
                    del buf[start:]
                else:
                    self._buf = bytearray(_BUFFER_SIZE)
                raise FrameTooLarge(f"{type(msg).__name__} of {size} bytes exceeds the frame "
                                    f"limit of {self._max_frame} bytes (max_frame); big bytes "
                                    "and arrays cross through shared memory, other values "
                                    "must fit")
            HEADER.pack_into(buf, start, size)
            self.sent += 1
            if hold and len(buf) <= HOLD_BYTES:
                self.held = len(buf)
                return size
            self.held = 0
            _send_all(self._sock, buf)
            if len(buf) > _BUFFER_SIZE:
                # Don't keep a huge buffer alive after one big message.
                self._buf = bytearray(_BUFFER_SIZE)
            return size

    def flush(self) -> None:
        """Write the held frames, if any."""
        with self._lock:
            if self.held:
                self.held = 0
                _send_all(self._sock, self._buf)

    def send_frame(self, body: bytes) -> None:
        """Send one already encoded body as a frame (a Call the host encoded ahead)."""
        data = HEADER.pack(len(body)) + body
        with self._lock:
            self.sent += 1
            _send_all(self._sock, data)

    def send_frames(self, bodies: list[bytes]) -> None:
        """Send already encoded bodies as frames with one system call (pipelined calls)."""
        data = b"".join(b for body in bodies for b in (HEADER.pack(len(body)), body))
        with self._lock:
            self.sent += len(bodies)
            _send_all(self._sock, data)
