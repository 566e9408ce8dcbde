"""``RemoteWorker``: an instance on a ``corral host``, with the local Worker's call surface.

It is a ``CallOptions`` like ``Worker`` and ``Pool`` (host/worker.py): ``call``,
``predict``, ``submit``, ``stream``, ``watch``, ``map``, ``starmap``, the async twins and
``options(...)`` all land in ``_submit``, which sends the call over the session's Link
(link.py) with the sink the local Worker would have made, so futures, streams, events and
errors behave the same. Only ``_submit``/``_map`` and the lifecycle methods differ.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import msgspec

from ..exceptions import InvalidState, MethodNotFound
from ..host.calls import EventCallback
from ..host.worker import CallOptions, _check_positive, _future
from . import protocol as p
from .errors import InstanceNotFound


class RemoteWorker(CallOptions):
    """An instance of a program running on a ``corral host`` (``Session.launch`` or
    ``Session.attach``). ``id`` names it on the server; ``pids`` are its processes there.
    ``stop()`` ends it on the server; a ``with`` block stops it at the end."""

    def __init__(self, session: Any, info: p.InstanceInfo):
        super().__init__(self, None, None)
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
        """Calls of this client in flight on the connection (no round trip)."""
        return self._link.in_flight()

    def start(self) -> "RemoteWorker":
        """Nothing to do: a remote instance is started by ``launch``."""
        return self

    # -- calls ------------------------------------------------------------------------------

    def options(self, *, context: dict[str, Any] | None = None,
                on_event: EventCallback | None = None, timeout: float | None = None,
                idempotent: bool = False, convert: bool = False) -> CallOptions:
        """Call with options, as ``Worker.options`` (the timeout is enforced on the
        server, where the call is stopped)."""
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context must be a dict, not {type(context).__name__}")
        _check_positive("timeout", timeout)
        return CallOptions(self, context, on_event, timeout, idempotent, convert)

    def _submit(self, method: str, args: tuple, kwargs: dict, opts: CallOptions,
                make: Callable[..., Any], blocking: bool = False) -> Any:
        if self._state != "ready":
            raise InvalidState(f"the remote instance {self.id} is {self._state}; no more "
                               "calls can be made")
        info = self.methods.get(method)
        if info is None:
            if not isinstance(method, str):
                raise TypeError(f"method name must be a str, not {type(method).__name__}")
            raise MethodNotFound(method, sorted(self.methods))
        if opts.timeout is None and self.default_timeout is not None:
            opts = CallOptions(self, opts.context, opts.on_event, self.default_timeout,
                               opts.idempotent, opts.convert)
        sink = make(next(self._link.ids), method, info.streams, opts)
        if blocking:
            sink.prepare_to_wait()
        self._link.call(self.id, sink, args, kwargs, opts)
        return sink.result() if blocking else sink

    def _map(self, method: str, items: Any, opts: CallOptions) -> Any:
        window = self.slots * self.workers * 2 + 8
        pending: deque = deque()
        try:
            for args in items:
                pending.append(self._submit(method, tuple(args), {}, opts, _future))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

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

    def get_state(self) -> Any:
        return self.call("get_state")

    def set_state(self, state: Any) -> Any:
        return self.call("set_state", state)

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

    def __enter__(self) -> "RemoteWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "RemoteWorker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"<corral.RemoteWorker {self.target_name} id={self.id} {self.state}>"
