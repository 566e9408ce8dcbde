"""The seam: what every runner offers its callers, and the one method a runner adds.

::

    caller ── call() submit() stream() watch() map() acall() asubmit() astream() awatch()
                │            (CallSurface / CallOptions: context, on_event, timeout, ...)
                ▼
    runner.dispatch(method, args, kwargs, options, kind)      <- the one entry point
                │
        ┌───────┴───────┬──────────────────┬────────────────────┐
      Worker          Pool              RemoteWorker          RayWorker     (FakeRunner in tests)
      (a process)     (N runners)       (corral host, WS)     (a Ray actor)

A **runner** is anything that satisfies the ``Runner`` Protocol: a local Worker, a Pool,
and later a remote or Ray worker. Pool, the HTTP server, its metrics and the plugin
manager are written against ``Runner`` only. To write one, subclass ``CallSurface`` (it
gives you ``options()``, every call method, the async twins, the context managers and the
default timeout) and implement:

* ``dispatch(method, args, kwargs, options, kind)``: start one call of kind ``kind``
  (a ``CallKind``) and return what that kind returns: the result (CALL), a ``CallFuture``
  (SUBMIT), a ``CallStream`` (STREAM, WATCH) or their asyncio twins. Raise InvalidState,
  MethodNotFound or WorkerUnavailable at once when the call cannot be made.
* the lifecycle and introspection of the Protocol: ``start``, ``stop``, ``state``,
  ``methods``, ``slots``, ``load``, ``capacity``, ``pid``, ``health``, ``stats``,
  ``usage``, ``describe``, ``reload``, ``crashes``.

``dispatch_map`` has a default (a window of ``submit`` calls); a runner may pipeline
better (Worker does). ``tests/fakes.py::FakeRunner`` is a complete runner in about a
hundred lines, and the worked example of this interface.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import msgspec

from ..exceptions import MethodNotFound

EventCallback = Callable[[Any], None]


class CallKind(enum.Enum):
    """How a call was made, which says what ``dispatch`` returns for it."""

    CALL = "call"  #: block until the result, and return it
    SUBMIT = "submit"  #: a CallFuture (a concurrent.futures.Future)
    STREAM = "stream"  #: a CallStream of the chunks (or the one result)
    WATCH = "watch"  #: a CallStream of every event, then Done
    ASUBMIT = "asubmit"  #: an AsyncCallFuture (an asyncio.Future)
    ASTREAM = "astream"  #: an AsyncCallStream of the chunks
    AWATCH = "awatch"  #: an AsyncCallStream of every event

    # Members are singletons compared by identity: hashed by identity too, in C (Enum's
    # own __hash__ is a Python call, paid by every call's lookup of its kind).
    __hash__ = object.__hash__

    @property
    def streams(self) -> bool:
        """Its caller reads a stream (never queued nor retried by a Pool)."""
        return self in _STREAM_KINDS

    @property
    def events(self) -> bool:
        """The stream yields every event, not only the chunks."""
        return self is CallKind.WATCH or self is CallKind.AWATCH


_STREAM_KINDS = frozenset({CallKind.STREAM, CallKind.WATCH, CallKind.ASTREAM, CallKind.AWATCH})


class Usage(msgspec.Struct):
    """What a runner's slots are doing right now, read on the host (no round trip): for
    the HTTP server's health and metrics. ``queued`` counts every call waiting (in a
    Pool: its own queue and its workers'), ``ready`` the processes that take calls."""

    busy: int
    queued: int
    slots: int
    restarts: int
    ready: int


@runtime_checkable
class Runner(Protocol):
    """The interface Pool, the HTTP server and the plugin manager drive (see the module
    docstring). ``state`` is one of new, starting, ready, reloading, restarting,
    stopping, stopped, failed; ``load`` counts calls started and not finished (for
    dispatching); ``capacity`` is how many calls it takes, running and waiting, before
    it refuses (QueueFull), or None when it never refuses."""

    target_name: str
    default_timeout: float | None

    @property
    def state(self) -> str: ...

    @property
    def methods(self) -> dict[str, Any]: ...

    @property
    def slots(self) -> int: ...

    @property
    def load(self) -> int: ...

    @property
    def capacity(self) -> int | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def crashes(self) -> list[Any]: ...

    def start(self) -> Any: ...

    def stop(self, grace: float = 10.0) -> None: ...

    def options(self, *, context: dict[str, Any] | None = None,
                on_event: EventCallback | None = None, timeout: float | None = None,
                idempotent: bool = False, convert: bool = False) -> "CallOptions": ...

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: "CallOptions",
                 kind: CallKind) -> Any: ...

    def dispatch_map(self, method: str, items: Iterator[tuple], options: "CallOptions"
                     ) -> Iterator[Any]: ...

    def health(self, timeout: float = 5.0) -> Any: ...

    def stats(self) -> Any: ...

    def usage(self) -> Usage: ...

    def describe(self, timeout: float | None = 30.0) -> dict[str, Any]: ...

    def reload(self, config: dict[str, Any] | None = None) -> None: ...

    # the call surface (CallSurface provides all of it)
    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def submit(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def watch(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def map(self, method: str, /, *iterables: Any) -> Iterator[Any]: ...

    def acall(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def asubmit(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def astream(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def awatch(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...


class CallOptions:
    """Per-call options bound to a runner: ``runner.options(context=..., timeout=...)``.

    Has the runner's call methods (``call``, ``predict``, ``stream``, ``watch``, ``submit``,
    ``map``, ``starmap`` and the async twins); ``context`` reaches the call as
    ``corral.current().context`` and ``on_event`` is called with every Log, Progress and
    Metric of the call as it arrives (on a corral thread for sync calls, on the event loop
    for async ones: keep it quick). ``timeout`` (seconds) stops the call in the worker
    when it runs longer and raises CallTimeout; ``idempotent`` lets a Pool retry the call
    on another worker when its worker crashes while running it. ``convert`` treats the
    keyword arguments as external input (JSON, command-line strings): the worker checks
    each against the method's type hints and converts it (``"3"`` to ``3`` for an int),
    and a bad input raises ArgumentError with ``problems`` listing every one.
    """

    __slots__ = ("_runner", "context", "on_event", "timeout", "idempotent", "convert")

    def __init__(self, runner: Any, context: dict[str, Any] | None,
                 on_event: EventCallback | None, timeout: float | None = None,
                 idempotent: bool = False, convert: bool = False):
        self._runner = runner
        self.context = context
        self.on_event = on_event
        self.timeout = timeout
        self.idempotent = idempotent
        self.convert = convert

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.CALL)

    def predict(self, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch("predict", args, kwargs, self, CallKind.CALL)

    def submit(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.SUBMIT)

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.STREAM)

    def watch(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.WATCH)

    def map(self, method: str, /, *iterables: Any) -> Iterator[Any]:
        """Call ``method`` once per item, like ``Executor.map``: ``map("predict", xs)``
        calls ``predict(x)`` for each ``x``; several iterables zip into positional
        arguments. Returns an iterator of the results, in order."""
        return self._runner.dispatch_map(method, zip(*iterables), self)

    def starmap(self, method: str, /, iterable: Iterable[Any]) -> Iterator[Any]:
        """Like ``map``, with each item a tuple of positional arguments."""
        return self._runner.dispatch_map(method, iter(iterable), self)

    def acall(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``await acall(method, ...)`` for the result. Called on a running event loop,
        the call starts at once and this returns its ``AsyncCallFuture`` (of that loop),
        which is also a coroutine: asyncio.gather and wait_for take it with no Task each,
        create_task and TaskGroup take it as a coroutine. An error in making the call (an
        unknown method, a value that cannot be sent, a stopped worker) is raised where it
        is awaited, as from an ``async def``. With no loop running
        (``asyncio.run(w.acall(...))``) this returns a coroutine that starts the call when
        it first runs."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._acall_when_run(method, args, kwargs)
        try:
            future = self._runner.dispatch(method, args, kwargs, self, CallKind.ASUBMIT)
        except Exception as exc:  # noqa: BLE001 - raised where it is awaited
            return _raise(exc)
        if not asyncio.iscoroutine(future):  # a runner whose future is not a coroutine
            return _await(future)
        return future

    async def _acall_when_run(self, method: str, args: tuple, kwargs: dict) -> Any:
        return await self._runner.dispatch(method, args, kwargs, self, CallKind.ASUBMIT)

    def asubmit(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.ASUBMIT)

    def astream(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.ASTREAM)

    def awatch(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._runner.dispatch(method, args, kwargs, self, CallKind.AWATCH)


async def _raise(exc: BaseException) -> Any:
    raise exc


async def _await(future: Any) -> Any:
    return await future


class CallSurface(CallOptions):
    """The base of every runner: its own default options (so ``runner.call(...)`` is
    ``runner.options().call(...)`` without the extra object), ``options()`` with its
    checks, the default timeout, the method checks, the context managers and a default
    ``dispatch_map``. A subclass implements ``dispatch`` (see the module docstring)."""

    default_timeout: float | None = None

    def __init__(self) -> None:
        CallOptions.__init__(self, self, None, None)

    # -- what a runner implements ------------------------------------------------------------

    def dispatch(self, method: str, args: tuple, kwargs: dict, options: CallOptions,
                 kind: CallKind) -> Any:
        raise NotImplementedError

    def dispatch_map(self, method: str, items: Iterator[tuple],
                     options: CallOptions) -> Iterator[Any]:
        """Submit ``method(*item)`` for each item, ``map_window()`` calls ahead, and yield
        the results in order; abandoned early, it cancels the calls not started yet."""
        return self._map_by_submit(method, items, options, self.map_window())

    def map_window(self) -> int:
        """How many calls ``dispatch_map`` keeps in flight: twice the slots by default."""
        return 2 * self.slots  # type: ignore[attr-defined]

    # -- shared by every runner ------------------------------------------------------------

    def options(self, *, context: dict[str, Any] | None = None,
                on_event: EventCallback | None = None, timeout: float | None = None,
                idempotent: bool = False, convert: bool = False) -> CallOptions:
        """Call with options: ``runner.options(context={...}, timeout=5).call(...)``
        (see CallOptions)."""
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context must be a dict, not {type(context).__name__}")
        check_positive("timeout", timeout)
        return CallOptions(self, context, self._wrap_on_event(on_event), timeout,
                           idempotent, convert)

    def _wrap_on_event(self, on_event: EventCallback | None) -> EventCallback | None:
        return on_event

    def timeout_for(self, options: CallOptions) -> float | None:
        """The deadline of a call made with ``options``: its own, else the default."""
        return options.timeout if options.timeout is not None else self.default_timeout

    def method_info(self, method: str) -> Any:
        """The method's ``MethodInfo``; MethodNotFound (or TypeError) if there is none."""
        methods = self.methods  # type: ignore[attr-defined]
        info = methods.get(method) if isinstance(method, str) else None
        if info is None:
            if not isinstance(method, str):
                raise TypeError(f"method name must be a str, not {type(method).__name__}")
            raise MethodNotFound(method, sorted(methods))
        return info

    def _map_by_submit(self, method: str, items: Iterator[tuple], options: CallOptions,
                       window: int) -> Iterator[Any]:
        pending: deque = deque()
        try:
            for args in items:
                pending.append(self.dispatch(method, tuple(args), {}, options,
                                             CallKind.SUBMIT))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                self._abandon(fut)

    def _abandon(self, future: Any) -> None:
        """A future ``dispatch_map`` no longer wants (default: cancel it)."""
        future.cancel()

    def get_state(self) -> Any:
        """The target's state: calls its ``get_state()`` method."""
        return self.call("get_state")

    def set_state(self, state: Any) -> Any:
        """Restore the target's state: calls its ``set_state(state)`` method."""
        return self.call("set_state", state)

    def __enter__(self) -> Any:
        if self.state == "new":  # type: ignore[attr-defined]
            self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Any:
        if self.state == "new":  # type: ignore[attr-defined]
            await asyncio.to_thread(self.start)  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.stop)  # type: ignore[attr-defined]


def check_positive(name: str, value: Any, kind: type | tuple = (int, float)) -> None:
    """``value`` is None or a positive number (``kind``), else ValueError naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive number (or None), not {value!r}")
