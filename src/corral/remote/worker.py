"""``RemoteWorker``: an instance on a ``corral host``, with the local Worker's call surface.

A runner on the seam (host/caller.py), like ``Worker`` and ``Pool``: ``CallSurface`` gives
``call``, ``predict``, ``submit``, ``stream``, ``watch``, ``map``, ``starmap``, the async
twins and ``options(...)``; they all land in ``dispatch``, which sends the call over the
session's Link (link.py) with the sink a local Worker makes for that ``CallKind``, so
futures, streams, events and errors behave the same. Only ``dispatch`` and the lifecycle
and introspection methods are its own.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..exceptions import InvalidState
from ..host.caller import CallKind, CallOptions, CallSurface, Usage
from ..host.worker import _SINKS
from . import protocol as p
from .errors import InstanceNotFound


class RemoteWorker(CallSurface):
    """An instance of a program running on a ``corral host`` (``Session.launch`` or
    ``Session.attach``). ``id`` names it on the server; ``pids`` are its processes there.
    ``stop()`` ends it on the server; a ``with`` block stops it at the end."""

    def __init__(self, session: Any, info: p.InstanceInfo):
        CallSurface.__init__(self)
        self.session = session
        self._link = session._link
        self._update(info)
        self._state = "ready"

    def _update(self, info: p.InstanceInfo) -> None:
        self.info = info
        self.id = info.id
        self.methods = dict(info.methods)
        self.slots = info.slots
        self.workers = info.workers
        self.target_name = info.target
        self.config = dict(info.config)
        self.default_timeout = None

    @property
    def state(self) -> str:
        if self._state == "ready" and self._link._error is not None:
            return "disconnected"
        return self._state

    @property
    def pids(self) -> list[int]:
        """The instance's worker processes on the server (as of launch or the last
        ``refresh()``)."""
        return list(self.info.pids)

    @property
    def pid(self) -> int | None:
        return self.info.pids[0] if self.info.pids else None

    @property
    def load(self) -> int:
        """Calls of this client in flight to this instance (no round trip)."""
        return self._link.in_flight(self.id)

    def start(self) -> "RemoteWorker":
        """Nothing to do: a remote instance is started by ``launch``."""
        return self

    @property
    def capacity(self) -> None:
        """The server queues what its workers cannot take yet: None (never refuses here)."""
        return None

    @property
    def crashes(self) -> list[Any]:
        """Crashes are the server's to see (``health().restarts`` counts them): []."""
        return []

    def usage(self) -> Usage:
        """Calls of this session in flight, against the instance's slots: read here, with no
        round trip (``stats()`` asks the server)."""
        slots = self.slots * self.workers
        load = self.load
        return Usage(min(load, slots), max(0, load - slots), slots, 0,
                     self.workers if self.state == "ready" else 0)

    # -- calls ------------------------------------------------------------------------------

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind) -> Any:
        """Send one call (the Runner entry point; see host/caller.py). The deadline is
        enforced on the server, where the call is stopped."""
        if self._state != "ready":
            raise InvalidState(f"the remote instance {self.id} is {self._state}; no more "
                               "calls can be made")
        info = self.method_info(method)
        timeout = self.timeout_for(options)
        if timeout != options.timeout:
            options = CallOptions(self, options.context, options.on_event, timeout,
                                  options.idempotent, options.convert)
        sink = _SINKS[kind](next(self._link.ids), method, info.streams, options)
        blocking = kind is CallKind.CALL
        if blocking:
            sink.prepare_to_wait()
        else:
            sink.worker = self
        self._link.call(self.id, sink, args, kwargs, options)
        return sink.result() if blocking else sink

    def map_window(self) -> int:
        return self.slots * self.workers * 2 + 8

    # -- introspection and control ----------------------------------------------------------

    def _query(self, what: str, timeout: float | None, kind: Any) -> Any:
        raw, _ = self._link.request(lambda seq: p.Query(seq, self.id, what, timeout))
        return msgspec.msgpack.decode(raw, type=kind)

    def health(self, timeout: float = 5.0) -> Any:
        """The instance's health, asked of its process(es) on the server (``Health``, or
        ``PoolHealth`` for an instance of several workers)."""
        from ..host.pool import PoolHealth
        from ..host.worker import Health

        return self._query("health", timeout, PoolHealth if self.workers > 1 else Health)

    def stats(self) -> Any:
        """Counters of the instance on the server (``Stats`` or ``PoolStats``)."""
        from ..host.pool import PoolStats
        from ..host.worker import Stats

        return self._query("stats", None, PoolStats if self.workers > 1 else Stats)

    def describe(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """The JSON Schemas of every method's inputs and output (as ``Worker.describe``)."""
        from ..protocol.messages import MethodSchema

        return self._query("describe", timeout, dict[str, MethodSchema])

    def refresh(self) -> p.InstanceInfo:
        """Read the instance's description again (state, pids after a restart)."""
        info = self._query("info", None, p.InstanceInfo)
        self._update(info)
        return info

    def reload(self, config: dict[str, Any] | None = None) -> None:
        """Rebuild the target on the server with a new ``config`` (as ``Worker.reload``)."""
        raw, _ = self._link.request(lambda seq: p.Reload(seq, self.id, config))
        self._update(msgspec.msgpack.decode(raw, type=p.InstanceInfo))

    def detach(self) -> None:
        """Keep the instance running after this session ends (``attach(id)`` from a later
        session with the same identity finds it)."""
        self._link.request(lambda seq: p.Detach(seq, self.id))
        self.info = msgspec.structs.replace(self.info, detached=True)

    def stop(self, grace: float = 5.0) -> None:
        """End the instance on the server: its processes stop for real (a busy one is
        killed after ``grace`` seconds). Idempotent."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._link._error is None:
            try:
                self._link.request(lambda seq: p.Stop(seq, self.id, grace))
            except InstanceNotFound:  # ended there already (stopped elsewhere, lingered)
                pass

    def __repr__(self) -> str:
        return f"<corral.RemoteWorker {self.target_name} id={self.id} {self.state}>"
