"""The Ray actor that hosts one local corral ``Worker`` on its node.

Ray places the actor (resources, tags), keeps node health and moves objects; everything
else stays corral's, on the node: the Worker's own supervision (a crashed model process
is restarted there and its calls fail with WorkerCrashed, while the actor stays up), its
shared memory to the model process, cancel, deadlines, capture of logs. The actor is a
threaded actor: calls run on the ``calls`` threads (each waits on its local call), and
cancel, health, stats, describe, reload and the death sentinel on the ``control`` ones, so
a busy worker still answers them.

Everything in and out is bytes (wire.py): the actor decodes a call's values, calls the
local Worker, and encodes its reply and events.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import msgspec
import ray

from ..exceptions import Cancelled, ProtocolError
from ..protocol import messages as m
from . import wire

CONTROL = "control"
CONTROL_THREADS = 6


class Info(msgspec.Struct, kw_only=True):
    """What the actor tells its RayWorker once its Worker is ready (and after a reload)."""

    node_id: str
    node_ip: str
    hostname: str
    actor_pid: int
    pid: int | None
    python: str
    target: str
    methods: dict[str, m.MethodInfo]
    slots: int
    setup_logs: list[str] = []
    environment: str | None = None


class Spec(msgspec.Struct, kw_only=True):
    """What to host: the target, the Worker's settings (corral's own, not user values),
    its config encoded with corral's codec, and the requirements of its environment."""

    target: str
    settings: dict[str, Any]
    config: bytes = wire.NONE
    requirements: list[str] | None = None
    env_root: str | None = None
    allow_pickle: bool = False


_encode = msgspec.msgpack.Encoder().encode


class WorkerHost:
    """The actor's class (made a Ray actor by ``actor_class()``)."""

    def __init__(self, spec: bytes):
        self._spec = msgspec.msgpack.decode(spec, type=Spec)
        self.codec = wire.Codec(self._spec.allow_pickle)
        self.worker: Any = None
        self.environment: str | None = None
        self._env_log: list[str] = []  # the environment build's progress lines
        self._calls: dict[int, Any] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    # -- lifecycle (control) ----------------------------------------------------------------

    @ray.method(concurrency_group=CONTROL)
    def start(self) -> Any:
        """Build the environment if any, start the Worker; its Info, or why not."""
        from ..host.supervisor import Restart
        from ..host.worker import Worker

        spec = self._spec
        try:
            settings = dict(spec.settings)
            if isinstance(settings.get("restart"), (dict, list)):
                settings["restart"] = msgspec.convert(settings["restart"], Restart)
            if spec.requirements:
                env = self._environment(spec.requirements, spec.env_root)
                settings["python"] = env.python
                settings["env"] = {**env.worker_env, **settings.get("env", {})}
                self.environment = env.key
            config = self.codec.decode(spec.config)
            self.worker = Worker(spec.target, config=config, **settings)
            self.worker.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the host, typed
            self.worker = None
            return wire.failed(exc)
        return wire.reply(wire.DONE, self._info())

    def _environment(self, requirements: list[str], root: str | None) -> Any:
        # The plugins' cache on this node's disk: built once per node and requirement set;
        # concurrent builds (several actors on one node) wait on its file lock.
        from ..plugins.envs import EnvironmentCache, default_root

        return EnvironmentCache(root or default_root()).ensure(
            requirements, progress=self._env_log.append)

    def _info(self) -> bytes:
        w = self.worker
        ctx = ray.get_runtime_context()
        return _encode(Info(node_id=ctx.get_node_id(), node_ip=ray.util.get_node_ip_address(),
                            hostname=socket.gethostname(), actor_pid=os.getpid(), pid=w.pid,
                            python=sys.version.split()[0], target=w.target_name,
                            methods=w.methods, slots=w.slots,
                            setup_logs=self._env_log + list(w.setup_logs),
                            environment=self.environment))

    @ray.method(concurrency_group=CONTROL)
    def info(self) -> bytes:
        return self._info()

    @ray.method(concurrency_group=CONTROL)
    def sentinel(self) -> bytes:
        """Returns only when the actor is shut down: the host waits on it to learn at once
        that the actor (or its node) died."""
        self._stopped.wait()
        return b""

    @ray.method(concurrency_group=CONTROL)
    def shutdown(self, grace: float) -> bytes:
        """Stop the Worker (calls may finish within ``grace``), then end the sentinel."""
        try:
            if self.worker is not None:
                self.worker.stop(grace)
        finally:
            self.codec.close()
            self._stopped.set()
        return b""

    # -- calls ------------------------------------------------------------------------------

    def _decode_args(self, msg: Any, blobs: tuple) -> Any:
        try:
            return self.codec.decode(msg.payload, blobs)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"call {msg.id} ({msg.method}) arrived undecodable: "
                                f"{exc}") from None

    def _options(self, msg: Any, context: Any) -> Any:
        if context is None and msg.timeout is None and not msg.convert:
            return self.worker  # a Worker is its own default options
        return self.worker.options(context=context, timeout=msg.timeout, convert=msg.convert)

    def _begin(self, msg: Any, blobs: tuple) -> Any:
        """Start a watched call (a stream of its events and chunks), registered for
        ``cancel``."""
        args, kwargs, context = self._decode_args(msg, blobs)
        opts = self._options(msg, context)
        with self._lock:
            if msg.id in self._cancelled:
                self._cancelled.discard(msg.id)
                raise Cancelled(f"call {msg.id} ({msg.method}) was cancelled")
            sink = opts.watch(msg.method, *args, **kwargs)
            self._calls[msg.id] = sink
        return sink

    def call(self, raw: bytes, *blobs: Any) -> Any:
        """One call (a ``wire.CallMsg`` and its blobs); its result (or error) with its
        events, once it ended. A blocking local call (it reads its own reply: no thread
        hand-off), its sink registered for ``cancel``."""
        from ..host.caller import CallKind

        try:
            msg = wire.read_call(raw)
            cid, method = msg.id, msg.method
            args, kwargs, context = self._decode_args(msg, blobs)
            opts = self._options(msg, context)
        except BaseException as exc:  # noqa: BLE001 - the caller's error
            return wire.failed(exc)
        sinks: list = []

        def register(sink: Any) -> None:
            sinks.append(sink)
            with self._lock:
                if cid in self._cancelled:  # cancelled before it got here
                    self._cancelled.discard(cid)
                    raise Cancelled(f"call {cid} ({method}) was cancelled")
                self._calls[cid] = sink

        try:
            value = self.worker.dispatch(method, args, kwargs, opts, CallKind.CALL,
                                         on_sink=register)
            value_raw, out = self.codec.encode(value, "result")
        except BaseException as exc:  # noqa: BLE001
            return wire.failed(exc)
        finally:
            with self._lock:
                self._calls.pop(cid, None)
        sink = sinks[0]
        events = [self.codec.encode_event(e) for e in sink.events] if sink.events else None
        return wire.reply(wire.DONE, value_raw, out, sink.run_time or 0.0, events)

    def stream(self, raw: bytes, *blobs: Any) -> Any:
        """One call, streamed (a Ray streaming generator): each event and chunk as the
        model makes it, then its end."""
        try:
            msg = wire.read_call(raw)
            cid = msg.id
            stream = self._begin(msg, blobs)
        except BaseException as exc:  # noqa: BLE001
            yield wire.failed(exc)
            return
        codec = self.codec
        try:
            for item in stream:
                kind = type(item)
                if kind is m.Chunk:
                    value_raw, out = codec.encode(item.value, "chunk")
                    yield wire.reply(wire.CHUNK, value_raw, out)
                elif kind is m.Done:
                    value_raw, out = codec.encode(item.value, "result")
                    yield wire.reply(wire.DONE, value_raw, out, item.run_time)
                else:
                    yield wire.reply(wire.EVENT, codec.encode_event(item))
        except BaseException as exc:  # noqa: BLE001
            yield wire.failed(exc)
        finally:
            with self._lock:
                self._calls.pop(cid, None)
            stream.close()

    @ray.method(concurrency_group=CONTROL)
    def cancel(self, cid: int) -> bool:
        """Stop call ``cid`` in the model process (as a local cancel), or before it starts."""
        with self._lock:
            sink = self._calls.get(cid)
            if sink is None:
                self._cancelled.add(cid)
                return False
        error = sink._cancel_error()
        # A sink registered a moment before its call is handed to the connection has no
        # owner to cancel it yet: try again until it has, or the call has ended.
        for _ in range(1000):
            if sink._cancel_with(error):
                return True
            if self._calls.get(cid) is not sink:
                return False
            time.sleep(0.001)
        return False

    # -- introspection and control ----------------------------------------------------------

    @ray.method(concurrency_group=CONTROL)
    def health(self, timeout: float) -> bytes:
        return _encode(self.worker.health(timeout))

    @ray.method(concurrency_group=CONTROL)
    def stats(self) -> bytes:
        return _encode(self.worker.stats())

    @ray.method(concurrency_group=CONTROL)
    def describe(self, timeout: float | None) -> Any:
        try:
            return wire.reply(wire.DONE, _encode(self.worker.describe(timeout)))
        except BaseException as exc:  # noqa: BLE001
            return wire.failed(exc)

    @ray.method(concurrency_group=CONTROL)
    def reload(self, config: bytes) -> Any:
        try:
            self.worker.reload(self.codec.decode(config))
        except BaseException as exc:  # noqa: BLE001
            return wire.failed(exc)
        return wire.reply(wire.DONE, self._info())

    @ray.method(concurrency_group=CONTROL)
    def model_pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None


_ACTOR: Any = None


def actor_class() -> Any:
    """WorkerHost as a Ray actor class (made once)."""
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = ray.remote(concurrency_groups={CONTROL: CONTROL_THREADS})(WorkerHost)
    return _ACTOR
