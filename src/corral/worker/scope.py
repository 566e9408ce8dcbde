"""The scope of one call: ``corral.current()`` inside a call running in a worker."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Callable

from ..protocol import messages as m
from ..protocol.values import to_wire

_current: ContextVar["Scope | None"] = ContextVar("corral_scope", default=None)


class Scope:
    """What a running call can see and report: its ``id`` and ``context``, ``progress()``,
    ``metric()`` and ``log()``. Everything reported reaches the caller as an event of this
    call, in order, before its result.
    """

    __slots__ = ("id", "context", "method", "_send", "_partial",
                 # cancellation (worker/cancel.py): the thread or loop running the call,
                 # whether it is inside user code, and how far a cancel got
                 "_tid", "_loop", "_task", "_started", "_in_user", "_requested", "_armed",
                 "_fired")

    def __init__(self, call_id: int, method: str, context: dict[str, Any] | None,
                 send: Callable[[Any], Any]):
        self.id = call_id
        self.method = method
        self.context: dict[str, Any] = context if context is not None else {}
        self._send = send
        self._partial: dict[str, str] = {}
        self._tid = 0
        self._loop = self._task = None
        self._started = self._in_user = self._requested = self._armed = self._fired = False

    @property
    def cancelled(self) -> bool:
        """True once the host asked to cancel this call. Code that runs long outside
        Python (a C loop that calls back, a polling loop) can check it and return early;
        Python code is interrupted anyway."""
        return self._requested

    def progress(self, step: float, total: float | None = None, phase: str | None = None) -> None:
        """Report progress: ``step`` of ``total`` (if known), optionally naming a ``phase``."""
        self._emit(m.Progress(self.id, float(step), None if total is None else float(total),
                              None if phase is None else str(phase)))

    def metric(self, name: str, value: Any, mode: str = "replace") -> None:
        """Record a metric. ``mode``: ``replace`` (last value wins), ``increment`` (add to it)
        or ``append`` (collect a list)."""
        if mode not in m.METRIC_MODES:
            raise ValueError(f"metric mode must be one of {', '.join(m.METRIC_MODES)}, not {mode!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric name must be a non-empty str, not {name!r}")
        self._emit(m.Metric(self.id, name, to_wire(value, where=f"metric {name!r}"), mode))

    def log(self, text: str, stream: str = "stdout") -> None:
        """Send one log line for this call, as ``print`` inside the call would."""
        self._emit(m.Log(self.id, stream, str(text)))

    def _emit(self, msg: Any) -> None:
        """Send a message of this call. From user code, the send itself is not user code:
        a cancel signal must not cut a frame in half (worker/cancel.py); a cancel that
        came meanwhile is raised right after."""
        if not self._in_user:
            self._send(msg)
            return
        self._in_user = False
        try:
            self._send(msg)
        finally:
            self._in_user = True
        if self._requested:
            from .cancel import CallCancelled

            raise CallCancelled()

    # -- used by the capture layer --------------------------------------------------------

    def write_text(self, stream: str, text: str) -> None:
        """Line-buffer text written to sys.stdout/sys.stderr during this call."""
        data = self._partial.pop(stream, "") + text
        *lines, rest = data.split("\n")
        for line in lines:
            self._emit(m.Log(self.id, stream, line))
        if rest:
            self._partial[stream] = rest

    def emit_line(self, stream: str, line: str) -> None:
        """Send one complete line captured at the file-descriptor level."""
        self._emit(m.Log(self.id, stream, line))

    def flush_partial(self) -> None:
        """Send any unterminated last line (at the end of the call)."""
        if self._partial:
            for stream, rest in self._partial.items():
                self._emit(m.Log(self.id, stream, rest))
            self._partial.clear()

    def __repr__(self) -> str:
        return f"<corral.Scope id={self.id} method={self.method!r}>"


class SetupSink:
    """Collects what the target writes while it is loaded and set up."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial: dict[str, str] = {}

    def write_text(self, stream: str, text: str) -> None:
        data = self._partial.pop(stream, "") + text
        *lines, rest = data.split("\n")
        self.lines.extend(lines)
        if rest:
            self._partial[stream] = rest

    def emit_line(self, stream: str, line: str) -> None:
        self.lines.append(line)

    def flush_partial(self) -> None:
        self.lines.extend(self._partial.values())
        self._partial.clear()


def current() -> Scope:
    """The scope of the call running in this thread or task.

    Raises RuntimeError outside a call (for example in ``setup()`` or in a thread the call
    started itself: pass the scope to such a thread explicitly).
    """
    scope = _current.get()
    if scope is None:
        raise RuntimeError(
            "corral.current() is only available inside a call running in a corral worker"
        )
    return scope
