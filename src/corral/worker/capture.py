"""Capture stdout/stderr in the worker and attribute it to calls.

Two layers:

* ``sys.stdout``/``sys.stderr`` are replaced by proxies that send Python-level writes to the
  scope of the call running in the writing thread or task (a context variable), so ``print``
  is attributed exactly even when several slots run at once.
* File descriptors 1 and 2 are redirected to pipes read by a capture thread, so writes by C
  code (``printf``, ``write(2)``) are caught too. Such output carries no caller identity: it
  goes to the call when exactly one call is running, to the setup log during setup, and
  otherwise to the worker log (``WorkerLog`` on the control channel). At the end of each call
  the running thread flushes C stdio and drains the pipes itself, so a call's fd-level output
  reaches the caller before its result. Each Python-level write drains them first too, so
  one call sees its print() and C-level lines in the order it wrote them. C stdio is made
  line-buffered, so a C line reaches the pipe when its newline is written; an unterminated
  C line waits for its newline (or the process's exit).

The worker's original stderr (a pipe the host reads) is kept for fatal-error dumps.
"""

from __future__ import annotations

import ctypes
import io
import os
import select
import sys
import threading
from typing import Any, Callable

from .scope import _current

_STREAMS = ("stdout", "stderr")


class _StreamProxy(io.TextIOBase):
    """sys.stdout/sys.stderr inside the worker."""

    def __init__(self, capture: "Capture", stream: str, fd: int):
        self._capture = capture
        self._stream = stream
        self._fd = fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        sink = _current.get() or self._capture.setup_sink
        if sink is not None:
            # Deliver pending fd-level output first, so that a call that mixes print()
            # with C-level writes sees its lines in the order it wrote them.
            self._capture.drain()
            sink.write_text(self._stream, s)
        else:
            os.write(self._fd, s.encode("utf-8", "replace"))
        return len(s)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"


def _line_buffer_c_stdio() -> Callable[[], Any]:
    """Make C's stdout/stderr line-buffered, as on a terminal, so a C ``printf`` line reaches
    the pipe when it is written. Returns the flush to run on each drain: nothing when that
    worked, ``fflush(NULL)`` otherwise (a C library without those symbols)."""
    try:
        libc = ctypes.CDLL(None)
        for name in ("stdout", "stderr"):
            stream = ctypes.c_void_p.in_dll(libc, name)
            if libc.setvbuf(stream, None, 1, 0) != 0:  # 1 == _IOLBF
                raise OSError(f"setvbuf({name}) failed")
        return lambda: None
    except (OSError, AttributeError, ValueError):
        pass
    try:
        fflush = ctypes.CDLL(None).fflush
        fflush.argtypes = [ctypes.c_void_p]
        return lambda: fflush(None)
    except (OSError, AttributeError):
        return lambda: None


class Capture:
    """Owns fds 1 and 2 of the worker process and routes what is written to them."""

    def __init__(self, worker_log: Callable[[str, str], None],
                 fd_target: Callable[[], Any]):
        # worker_log(stream, line) receives output no call owns; fd_target() names the
        # sink (a Scope or SetupSink) that fd-level output should go to right now, or None.
        self._worker_log = worker_log
        self._fd_target = fd_target
        self.setup_sink: Any = None
        self._lock = threading.Lock()
        self._partial = {s: b"" for s in _STREAMS}
        self._fflush: Callable[[], Any] = lambda: None
        self._pumping = False  # the capture thread holds data it read but has not routed
        self._readers: dict[int, str] = {}
        # A poll object may not be used by two threads at once: one per thread.
        self._local = threading.local()
        self.original_stderr = -1

    def install(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._fflush = _line_buffer_c_stdio()
        self.original_stderr = os.dup(2)
        os.set_inheritable(self.original_stderr, False)
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self._readers[r] = stream
        sys.stdout = _StreamProxy(self, "stdout", 1)
        sys.stderr = _StreamProxy(self, "stderr", 2)
        threading.Thread(target=self._pump, name="corral-capture", daemon=True).start()

    def _pump(self) -> None:
        fds = list(self._readers)
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except (OSError, ValueError):
                return
            with self._lock:
                self._pumping = True
                try:
                    for fd in ready:
                        self._read_available(fd, final=False)
                finally:
                    self._pumping = False

    def _read_available(self, fd: int, final: bool) -> None:
        stream = self._readers[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self._route(stream, self._partial[stream] + data)
            self._partial[stream] = b""
        if final and self._partial[stream]:
            self._emit(stream, [self._partial[stream]])
            self._partial[stream] = b""

    def _route(self, stream: str, data: bytes) -> None:
        *lines, rest = data.split(b"\n")
        self._partial[stream] = rest
        if lines:
            self._emit(stream, lines)

    def _emit(self, stream: str, lines: list[bytes]) -> None:
        sink = self._fd_target()
        for raw in lines:
            text = raw.decode("utf-8", "replace")
            if sink is not None:
                sink.emit_line(stream, text)
            else:
                self._worker_log(stream, text)

    def drain(self) -> None:
        """Deliver everything written to fds 1 and 2 so far, now, from this thread.

        On the hot path of every call: one poll() says whether there is anything to read.
        The capture thread reads and routes under the same lock, so once we hold it,
        nothing it has read is still on its way."""
        self._fflush()
        # Unread data is still in a pipe (poll sees it); read data not yet routed is held by
        # the capture thread under the lock with _pumping set. Neither: nothing to deliver.
        partial = self._partial
        poll = getattr(self._local, "poll", None)
        if poll is None:
            poll = self._local.poll = select.poll()
            for fd in self._readers:
                poll.register(fd, select.POLLIN)
        if not poll.poll(0) and not self._pumping and not partial["stdout"] \
                and not partial["stderr"]:
            return
        with self._lock:
            for fd, _ in poll.poll(0):
                self._read_available(fd, final=False)
            if partial["stdout"] or partial["stderr"]:
                for fd in self._readers:
                    self._read_available(fd, final=True)
