"""``RayWorker``: a corral Worker placed by Ray, with the local Worker's call surface.

::

    host (this process)                         a node of the cluster
    RayWorker.dispatch ── encode (wire.py) ──►  WorkerHost actor (actor.py)
      CALL/SUBMIT: actor.call.remote()            └─ local corral Worker ─► model process
      streams, on_event: actor.stream.remote()       (its own supervision, shared memory,
        (a Ray streaming generator: events and        cancel, deadlines, captured logs)
         chunks as they are made)
      cancel: actor.cancel.remote(id)
      sentinel: actor.sentinel.remote() never returns while the actor lives; it fails
        when the actor or its node dies ─► calls in flight fail with NodeLost, and a new
        actor is placed on a node that fits (state "restarting", then "ready" again, or
        "failed" with the reason: NoNodeFits)

A runner on the seam (host/caller.py), like ``Worker`` and ``RemoteWorker``: the call
sinks are the local Worker's (``_SINKS``), so futures, streams, events and errors behave
the same, and ``Pool(target, runner=corral.ray.on(...))`` drives it unchanged.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from typing import Any

import msgspec

from ..exceptions import InvalidState, ProtocolError, WorkerCrashed, WorkerStopped
from ..host.caller import CallKind, CallOptions, CallSurface, Usage, check_positive
from ..host.calls import settle
from ..host.supervisor import Crash
from ..host.worker import _SINKS, Health, Stats
from . import wire
from .errors import NodeLost, NoNodeFits
from .placement import RayPlacement, explain_no_fit, node_fits

#: The Worker settings a RayWorker hands to the local Worker on its node.
WORKER_SETTINGS = ("slots", "prefetch", "restart", "cancel_grace", "max_calls", "max_rss",
                   "check_config", "env", "python", "cwd", "start_timeout", "oob_threshold",
                   "allow_pickle", "max_frame", "stream_window")

_encode = msgspec.msgpack.Encoder().encode


class RayWorker(CallSurface):
    """Run ``target`` in a corral Worker on a node of a Ray cluster, placed by
    ``placement`` (``corral.ray.on(...)``; default: the cluster this process is connected
    to, 1 CPU). ``target`` is a reference importable on the nodes (``"pkg.mod:Name"``, or
    a ``file.py:Name`` path that exists there). The other keywords are the local Worker's
    (``config``, ``slots``, ``restart``, ``timeout``, ``cancel_grace``, ``max_calls``,
    ``max_rss``, ``check_config``, ``env``, ``allow_pickle``...). ``requirements`` (a list
    of requirement lines) get an environment built on the node by the plugins' cache
    (``env_root``: its folder there; default the plugins' default), once per node.

    The model process crashing is handled on its node, as locally (WorkerCrashed, restart
    there). The actor or its node dying fails the calls in flight with ``NodeLost`` and the
    worker is placed again on a node that fits (``state`` is ``restarting`` meanwhile, and
    calls raise InvalidState: a Pool sends them elsewhere); when no node fits, it fails
    (``NoNodeFits``, and ``health().detail`` says why)."""

    def __init__(self, target: Any, *, placement: RayPlacement | None = None,
                 config: dict[str, Any] | None = None, timeout: float | None = None,
                 requirements: list[str] | None = None, env_root: str | None = None,
                 **settings: Any):
        if not isinstance(target, str):
            raise TypeError("a Ray worker's target is a reference importable on the nodes "
                            f"('pkg.mod:Name' or 'file.py:Name'), not {type(target).__name__}")
        settings = {k: v for k, v in settings.items() if v is not None}
        unknown = sorted(set(settings) - set(WORKER_SETTINGS))
        if unknown:
            raise TypeError(f"RayWorker got unexpected keyword arguments {unknown}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        if requirements is not None and (isinstance(requirements, str) or not all(
                isinstance(r, str) for r in requirements)):
            raise TypeError("requirements must be a list of requirement lines (str)")
        slots = settings.setdefault("slots", 1)
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ValueError(f"slots must be an int >= 1, not {slots!r}")
        check_positive("timeout", timeout)
        CallSurface.__init__(self)
        self.target = self.target_name = target
        self.placement = placement if placement is not None else RayPlacement()
        self.config = dict(config or {})
        self.slots = slots
        self.default_timeout = timeout
        self.requirements = list(requirements) if requirements is not None else None
        self.env_root = env_root
        self.settings = settings
        self.allow_pickle = bool(settings.get("allow_pickle", False))
        self.codec = wire.Codec(self.allow_pickle)
        self.methods: dict[str, Any] = {}
        self.setup_logs: list[str] = []
        self.info: Any = None  # the actor's Info (node, pids, methods)
        self._state = "new"
        self._detail = ""
        self._failure: BaseException | None = None
        self._actor: Any = None
        self._generation = 0  # bumped per actor: a dead actor's news is not the new one's
        self._calls: dict[int, Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # _calls, _state, _actor
        self._lifecycle = threading.RLock()
        self._crashes: list[Crash] = []
        self._replacements = 0
        self._encoded_config = self._encode_config(self.config)
        from .inventory import _workers

        _workers.add(self)  # (nodes() counts its calls on its node)

    def _encode_config(self, config: dict[str, Any]) -> bytes:
        # (no blobs: a config travels inline, in the actor's creation arguments)
        raw, _ = wire.Codec(self.allow_pickle, threshold=1 << 62).encode(config, "config")
        return raw

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def pid(self) -> int | None:
        """The model process's pid on its node (as of the last news from the actor)."""
        return self.info.pid if self.info is not None else None

    @property
    def node_id(self) -> str | None:
        """The Ray node the worker runs on."""
        return self.info.node_id if self.info is not None else None

    @property
    def node_ip(self) -> str | None:
        return self.info.node_ip if self.info is not None else None

    @property
    def crashes(self) -> list[Crash]:
        """The losses of its actor or node so far, oldest first (crashes of the model
        process are its node's Worker's: ``health().restarts`` counts them too)."""
        return list(self._crashes)

    @property
    def capacity(self) -> None:
        """Calls beyond the slots wait on the node: None (never refuses for room)."""
        return None

    @property
    def load(self) -> int:
        """Calls sent and not finished (no round trip)."""
        return len(self._calls)

    def usage(self) -> Usage:
        load = self.load
        return Usage(min(load, self.slots), max(0, load - self.slots), self.slots,
                     self._replacements, 1 if self._state == "ready" else 0)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "RayWorker":
        """Place the actor, start the Worker on its node and wait until it is ready.
        Raises NoNodeFits when no node can host it, SetupError and WorkerStartupError as a
        local Worker does."""
        with self._lifecycle:
            if self._state != "new":
                raise InvalidState(f"start() on a Ray worker that is {self._state}; make a "
                                   "new one to start again")
            self._state = "starting"
            try:
                actor, info = self._place()
            except BaseException as exc:
                self._state, self._detail, self._failure = "failed", str(exc), exc
                raise
            self._adopt(actor, info)
        return self

    def _place(self) -> tuple[Any, Any]:
        """A new actor on a node that fits, its Worker ready: (actor, Info)."""
        from .actor import Spec, actor_class
        from .cluster import connect

        ray = connect(self.placement.address)
        self._check_fits(ray)
        spec = Spec(target=self.target, settings=self.settings, config=self._encoded_config,
                    requirements=self.requirements, env_root=self.env_root,
                    allow_pickle=self.allow_pickle)
        room = self.slots + self.settings.get("prefetch", 1)
        actor = actor_class().options(
            **self.placement.actor_options(), max_concurrency=2 * room + 8,
            max_restarts=0,
            max_task_retries=0).remote(_encode(spec))
        try:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=self.placement.place_timeout)
            except ray.exceptions.GetTimeoutError:
                raise NoNodeFits(
                    f"no node freed room for a Ray worker of {self.target} within "
                    f"{self.placement.place_timeout:g} s (it needs {self._wanted_text()})",
                    self.placement.wanted()) from None
            header, blobs = wire.read(ray.get(actor.start.remote()))
            if header.kind != wire.DONE:
                raise wire.error_of(header)
            info = msgspec.msgpack.decode(header.value, type=_info_type())
        except BaseException:
            _kill(ray, actor)
            raise
        return actor, info

    def _wanted_text(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.placement.wanted().items()) or "nothing"

    def _check_fits(self, ray: Any) -> None:
        wanted = self.placement.wanted()
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if not any(node_fits(wanted, n.get("Resources", {})) for n in alive):
            raise NoNodeFits(f"no node of the Ray cluster can host a worker of {self.target} "
                             f"(it needs {self._wanted_text()}): "
                             f"{explain_no_fit(wanted, alive)}", wanted)

    def _adopt(self, actor: Any, info: Any) -> None:
        """Make ``actor`` this worker's (ready), and watch it for its death."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._actor = actor
            self._take_info(info)
            self._state, self._detail, self._failure = "ready", "", None
        sentinel = actor.sentinel.remote()
        sentinel.future().add_done_callback(
            lambda fut: self._actor_ended(generation, fut.exception()))

    def _take_info(self, info: Any) -> None:
        self.info = info
        self.methods = dict(info.methods)
        self.setup_logs = list(info.setup_logs)

    def _actor_ended(self, generation: int, cause: BaseException | None) -> None:
        """Actor ``generation`` died: its sentinel failed, or a call on it did (on a Ray
        thread)."""
        with self._lock:
            if generation != self._generation or self._state not in ("ready",):
                return  # stopped on purpose, or old news
            info = self.info
            error = self._node_lost(cause)
            self._state = "restarting"
            self._detail = f"replacing it: {error}"
            calls, self._calls = self._calls, {}
            self._actor = None
        self._crashes.append(Crash(time.time(), info.pid if info else None, None, None,
                                   str(error)))
        for sink in calls.values():
            settle(sink, error=error)
        threading.Thread(target=self._replace, name="corral-ray-replace", daemon=True).start()

    def _replace(self) -> None:
        """Place a new actor after the old one died (its own thread). Ray may not know yet
        that the node is gone and place the new actor there, which then dies unstarted:
        that is tried again, within ``place_timeout``."""
        ray = _ray()
        deadline = time.monotonic() + self.placement.place_timeout
        while True:
            try:
                actor, info = self._place()
                break
            except ray.exceptions.RayActorError as exc:
                if time.monotonic() < deadline and self._state == "restarting":
                    time.sleep(0.5)
                    continue
                failure: BaseException = NoNodeFits(
                    f"no replacement for the Ray worker of {self.target} could be started "
                    f"within {self.placement.place_timeout:g} s: {exc}",
                    self.placement.wanted())
            except BaseException as exc:  # noqa: BLE001 - the worker's state says it
                failure = exc
            with self._lock:
                if self._state == "restarting":
                    self._state, self._detail, self._failure = "failed", str(failure), failure
            return
        with self._lifecycle:
            if self._state != "restarting":  # stopped meanwhile
                _kill(ray, actor)
                return
            self._replacements += 1
            self._adopt(actor, info)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the Worker on its node (calls may finish within ``grace`` seconds, then
        fail with WorkerStopped) and end the actor. Idempotent."""
        with self._lifecycle:
            with self._lock:
                if self._state in ("new", "stopped"):
                    self._state = "stopped"
                    return
                self._state = "stopping"
                self._generation += 1
                actor, self._actor = self._actor, None
            if actor is not None:
                ray = _ray()
                try:
                    ray.get(actor.shutdown.remote(grace), timeout=grace + 10.0)
                except Exception:  # noqa: BLE001 - gone already, or stuck: killed below
                    pass
                _kill(ray, actor)
            with self._lock:
                calls, self._calls = self._calls, {}
                self._state = "stopped"
            for sink in calls.values():
                settle(sink, error=WorkerStopped(
                    f"call {sink.id} ({sink.method}) was cut off: the Ray worker was stopped",
                    pid=self.pid))
            self.codec.close()

    # -- calls ------------------------------------------------------------------------------

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind) -> Any:
        """Start one call (the Runner entry point; see host/caller.py). The deadline is
        enforced on the node, where the call is stopped."""
        actor = self._actor
        if self._state != "ready" or actor is None:
            raise self._not_callable()
        info = self.method_info(method)
        timeout = self.timeout_for(options)
        raw, blobs = self.codec.encode_call(args, kwargs, options.context)
        cid = next(self._ids)
        sink = _SINKS[kind](cid, method, info.streams, options)
        sink._owner = self
        blocking = kind is CallKind.CALL
        live = kind.streams or info.streams or options.on_event is not None
        if blocking and live:
            sink.prepare_to_wait()
        elif not blocking:
            sink.worker = self
        msg = wire.call_msg(cid, method, raw, timeout, options.convert)
        with self._lock:
            self._calls[cid] = sink
        try:
            if live:
                gen = actor.stream.options(num_returns="streaming").remote(msg, *blobs)
            else:
                ref = actor.call.remote(msg, *blobs)
        except BaseException:
            with self._lock:
                self._calls.pop(cid, None)
            raise
        sink._sent = True
        if live:
            threading.Thread(target=self._feed, args=(sink, gen, actor), daemon=True,
                             name=f"corral-ray-stream-{cid}").start()
        elif blocking:
            try:
                item = _ray().get(ref)
            except KeyboardInterrupt:
                sink._cancel_with(sink._cancel_error())
                raise
            except BaseException as exc:  # noqa: BLE001 - Ray's error, mapped
                self._end(sink, error=self._ray_error(exc, actor))
            else:
                self._reply(sink, item)
        else:
            ref.future().add_done_callback(functools.partial(self._replied, sink, actor))
        return sink.result() if blocking else sink

    def _not_callable(self) -> BaseException:
        if self._state == "new":
            return InvalidState("the Ray worker is not started: call start() or use it as "
                                "a context manager")
        if self._state == "failed" and self._failure is not None:
            if isinstance(self._failure, NoNodeFits):
                return self._failure
            return InvalidState(f"the Ray worker failed ({self._detail})")
        return InvalidState(f"the Ray worker is {self._state}"
                            + (f" ({self._detail})" if self._detail else "")
                            + "; no call can be made now")

    def _replied(self, sink: Any, actor: Any, fut: Any) -> None:
        exc = fut.exception()
        if exc is not None:
            self._end(sink, error=self._ray_error(exc, actor))
        else:
            self._reply(sink, fut.result())

    def _reply(self, sink: Any, item: Any) -> None:
        """A plain call's reply: replay its events, then its result or error."""
        with self._lock:
            if self._calls.pop(sink.id, None) is None:
                return  # cancelled meanwhile, or its actor was lost
        header, blobs = wire.read(item)
        if header.kind != wire.DONE:
            settle(sink, error=self._error_of(header))
            return
        try:
            for ev in header.events:
                sink._event(self.codec.decode_event(ev, sink.id))
            value = self.codec.decode(header.value, blobs)
        except (ValueError, TypeError) as exc:
            settle(sink, error=ProtocolError(f"the result of call {sink.id} ({sink.method}) "
                                             f"cannot be decoded: {exc}"))
            return
        settle(sink, value, header.run_time)

    def _feed(self, sink: Any, gen: Any, actor: Any) -> None:
        """Deliver a streamed call's items as they come (one thread per live call)."""
        ray = _ray()
        codec = self.codec
        try:
            for ref in gen:
                if sink.id not in self._calls:
                    return  # cancelled: the actor stops the work
                header, blobs = wire.read(ray.get(ref))
                kind = header.kind
                if kind == wire.EVENT:
                    sink._event(codec.decode_event(header.value, sink.id))
                elif kind == wire.CHUNK:
                    sink._chunk(codec.decode(header.value, blobs))
                elif kind == wire.DONE:
                    self._end(sink, codec.decode(header.value, blobs), header.run_time)
                    return
                else:
                    self._end(sink, error=self._error_of(header))
                    return
            self._end(sink, error=ProtocolError(f"the stream of call {sink.id} "
                                                f"({sink.method}) ended without a result"))
        except (ValueError, TypeError) as exc:
            self.cancel(sink, ProtocolError(f"a reply of call {sink.id} ({sink.method}) "
                                            f"cannot be decoded: {exc}"))
        except BaseException as exc:  # noqa: BLE001 - Ray's error, mapped
            self._end(sink, error=self._ray_error(exc, actor))

    def _end(self, sink: Any, value: Any = None, run_time: float = 0.0,
             error: BaseException | None = None) -> None:
        with self._lock:
            if self._calls.pop(sink.id, None) is None:
                return
        settle(sink, value, run_time, error)

    def _error_of(self, header: Any) -> BaseException:
        error = wire.error_of(header)
        if isinstance(error, WorkerCrashed):
            self._refresh_info()  # its node restarts the model process: a new pid
        return error

    def _refresh_info(self) -> None:
        actor = self._actor
        if actor is None:
            return

        def took(fut: Any) -> None:
            if fut.exception() is None and self._actor is actor:
                self.info = msgspec.structs.replace(self.info, pid=fut.result())

        actor.model_pid.remote().future().add_done_callback(took)

    def _ray_error(self, exc: BaseException, actor: Any) -> BaseException:
        """Ray's error for a call made on ``actor``, as corral's."""
        import ray

        if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
            with self._lock:
                generation = self._generation if actor is self._actor else None
            if generation is not None:  # news of the actor in use: do not wait for the sentinel
                self._actor_ended(generation, exc)
            return self._node_lost(exc)
        if isinstance(exc, ray.exceptions.RayError):
            return WorkerCrashed(f"Ray failed a call of {self.target}: {exc}", pid=self.pid)
        return exc

    def _node_lost(self, cause: BaseException | None) -> NodeLost:
        info = self.info
        where = f"node {info.node_ip} ({info.node_id[:12]})" if info is not None else "its node"
        reason = str(cause).strip().splitlines()[0] if cause is not None else "it ended"
        return NodeLost(f"the Ray actor hosting {self.target} on {where} died: {reason}",
                        node_id=info.node_id if info else None,
                        node_ip=info.node_ip if info else None, pid=self.pid)

    def cancel(self, sink: Any, error: BaseException) -> bool:
        """A sink's ``_cancel_with``: fail it now and have the actor stop the work in the
        model process."""
        with self._lock:
            if self._calls.pop(sink.id, None) is None:
                return False
            actor = self._actor
        settle(sink, error=error)
        if actor is not None:
            try:
                actor.cancel.remote(sink.id)
            except Exception:  # noqa: BLE001 - the actor is gone: so is the work
                pass
        return True

    def map_window(self) -> int:
        return 2 * (self.slots + self.settings.get("prefetch", 1)) + 2

    # -- introspection and control ----------------------------------------------------------

    def _ask(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        actor = self._actor
        if actor is None or self._state not in ("ready",):
            raise self._not_callable()
        ray = _ray()
        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=timeout)
        except ray.exceptions.RayError as exc:
            if isinstance(exc, ray.exceptions.GetTimeoutError):
                raise
            raise self._ray_error(exc, actor) from None

    def health(self, timeout: float = 5.0) -> Health:
        """The worker's health, asked of the Worker on its node (``failed`` if the actor
        does not answer within ``timeout``). ``restarts`` counts the model process's
        restarts there and the replacements of the actor."""
        if self._state != "ready":
            return Health(self._state, self.pid, 0, self.slots, self._detail,
                          self._replacements)
        try:
            health = msgspec.msgpack.decode(self._ask("health", timeout, timeout=timeout + 1),
                                            type=Health)
        except Exception as exc:  # noqa: BLE001 - no answer is the answer
            if self._state != "ready":
                return self.health(timeout)
            return Health("failed", self.pid, 0, self.slots,
                          f"no answer from the actor on node {self.node_ip}: {exc!r}",
                          self._replacements)
        if health.pid is not None and self.info is not None and health.pid != self.info.pid:
            self.info = msgspec.structs.replace(self.info, pid=health.pid)
        return msgspec.structs.replace(health, restarts=health.restarts + self._replacements)

    def stats(self) -> Stats:
        """The Worker's counters on its node (one round trip)."""
        idle = Stats(self.pid, None, 0, 0, 0, self.slots, 0.0, self._replacements, 0)
        if self._state != "ready":
            return idle
        try:
            stats = msgspec.msgpack.decode(self._ask("stats", timeout=30.0), type=Stats)
        except (WorkerCrashed, InvalidState):  # lost meanwhile: its state says so
            return idle
        return msgspec.structs.replace(stats, restarts=stats.restarts + self._replacements)

    def describe(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """The JSON Schemas of every method's inputs and output (as ``Worker.describe``)."""
        from ..protocol.messages import MethodSchema

        header, _ = wire.read(self._ask("describe", timeout, timeout=timeout))
        if header.kind != wire.DONE:
            raise wire.error_of(header)
        return msgspec.msgpack.decode(header.value, type=dict[str, MethodSchema])

    def reload(self, config: dict[str, Any] | None = None) -> None:
        """Rebuild the target on its node with a new ``config`` (as ``Worker.reload``);
        a replacement actor starts with the latest config."""
        new_config = self.config if config is None else dict(config)
        encoded = self._encode_config(new_config)
        header, _ = wire.read(self._ask("reload", encoded))
        if header.kind != wire.DONE:
            raise wire.error_of(header)
        self._take_info(msgspec.msgpack.decode(header.value, type=_info_type()))
        self.config, self._encoded_config = new_config, encoded

    def __repr__(self) -> str:
        where = f" node={self.node_ip}" if self.info is not None else ""
        return f"<corral.ray.RayWorker {self.target_name}{where} pid={self.pid} {self._state}>"


def _ray() -> Any:
    import ray

    return ray


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - gone already
        pass


def _info_type() -> Any:
    from .actor import Info

    return Info
