"""Prediction records and their life: submit to the runner, follow events, finish.

A ``Prediction`` holds what Cog's API reports (id, status, input, output, logs, error,
metrics.predict_time, created_at/started_at/completed_at as ISO timestamps). Its status
goes ``starting`` -> ``processing`` -> ``succeeded`` | ``failed`` | ``canceled``.
``Predictions`` owns every record of an app, keyed by id (so a second PUT with one id finds
the first prediction and never runs it again), and runs them on the runner's ``predict``:

* a non-streaming target goes through ``runner.asubmit()`` (a Pool queues it while every
  slot is busy; a full queue raises ``corral.QueueFull`` there, before a record exists);
* a generator target goes through ``runner.awatch()``, so every chunk is an ``output``
  event as soon as it arrives (a Pool does not queue streams: the service itself refuses
  one with QueueFull when the pool's load is already at slots + max_queue).

Listeners (SSE responses, the webhook sender) get ``(event, payload)`` tuples: ``start``,
``output`` (one chunk), ``logs`` (one line), ``progress`` (``{step, total, phase}``),
``metric`` (``{name, value, mode}``), ``completed`` (the record's JSON). Webhooks only
know Cog's four (``EVENTS``).

Finished records are dropped by ``retention`` (see retention.py); a dropped id is unknown
again (GET answers 404, and a PUT with it runs a new prediction).

A prediction stays ``starting`` while it waits in a Pool's queue, and turns
``processing`` (with its ``start`` event) when the pool sends it to a worker; a call
that a worker holds as its prefetched next one counts as processing. With ``files``
(files.py), File/Path outputs become data: URLs or /files links before they are
reported, and the prediction's workspace is removed when it ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .._jsonable import jsonable
from ..exceptions import Cancelled, QueueFull
from ..host.logbuffer import LogBuffer, default_max_log_bytes
from .files import has_files
from .retention import Retention

if TYPE_CHECKING:
    from ..host.caller import Runner

TERMINAL = ("succeeded", "failed", "canceled")
# Ids of predictions and trainings, from clients: bounded so a record cannot hold megabytes.
MAX_ID_LENGTH = 256
EVENTS = ("start", "output", "logs", "completed")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Prediction:
    def __init__(self, pid: str, input: dict[str, Any], webhook: str | None = None,
                 events_filter: list[str] | None = None, max_log_bytes: int | None = None):
        self.id = pid
        self.input = input
        self.webhook = webhook
        self.events_filter = set(events_filter) if events_filter is not None else set(EVENTS)
        self.status = "starting"
        self.output: Any = None
        #: The log lines, the newest ``max_log_bytes`` kept (host/logbuffer.py).
        self.log = LogBuffer(max_log_bytes)
        self.error: str | None = None
        self.error_type: type | None = None
        self.problems: list[dict[str, Any]] = []
        self.created_at = now_iso()
        self.started_at: str | None = None
        self.completed_at: str | None = None
        self.predict_time: float | None = None
        self.metrics: dict[str, Any] = {}
        self.handle: Any = None  # the runner's future or stream: what cancel() cancels
        self.workspace: Any = None  # its files (files.Workspace), removed when it ends
        self.done = asyncio.Event()
        self.listeners: list[Callable[[str, Any], None]] = []
        #: Called once when it ends, before the listeners hear "completed" (cleanup).
        self.on_finish: list[Callable[[], None]] = []
        self._t0 = time.monotonic()

    @property
    def logs(self) -> str:
        """The kept log text (a marker line first when older lines were dropped)."""
        return self.log.text()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        metrics = dict(jsonable(self.metrics))
        if self.predict_time is not None:
            metrics["predict_time"] = self.predict_time
        return {
            "id": self.id,
            "status": self.status,
            "input": self.input,
            "output": jsonable(self.output),
            "logs": self.log.text(),
            "error": self.error,
            "metrics": metrics,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
        }

    def emit(self, event: str, payload: Any) -> None:
        for listener in list(self.listeners):
            listener(event, payload)

    # (Payloads are built only when someone listens: a plain request has no listener, and
    # the record's JSON is then made once, for the answer.)

    # -- state changes (on the event loop) -------------------------------------------------

    def mark_started(self) -> None:
        if self.status == "starting":
            self.status = "processing"
            self.started_at = now_iso()
            self._t0 = time.monotonic()
            if self.listeners:
                self.emit("start", self.to_json())

    def add_log(self, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        self.log.append(text)
        if self.listeners:
            self.emit("logs", text)

    def add_chunk(self, value: Any) -> None:
        if self.output is None:
            self.output = []
        self.output.append(value)
        if self.listeners:
            self.emit("output", jsonable(value))

    def finish(self, status: str, output: Any = None, error: BaseException | None = None,
               run_time: float | None = None) -> None:
        if self.finished:
            return
        if self.started_at is None:
            self.started_at = now_iso()
        self.status = status
        if status == "succeeded" and output is not None:
            self.output = output
        if error is not None:
            # Cog's error text: the exception's own message (the type is in the logs)
            remote = getattr(error, "remote_traceback", None) is not None
            self.error = (error.message if remote else str(error)) or \
                (error.type_name.rsplit(".", 1)[-1] if remote else type(error).__name__)
            self.error_type = type(error)
            if remote and status == "failed" and error.remote_traceback:
                # As Cog: the model's traceback ends the logs (the error is its message only)
                self.add_log(error.remote_traceback)
            # Bad inputs, each as {"loc": ["body", "input", name, ...], "msg": ...}
            self.problems = [{"loc": ["body", "input", *p["loc"]], "msg": p["msg"],
                              "type": "value_error.missing"
                              if p["msg"] in ("required input is missing", "Field required")
                              else "value_error"}
                             for p in getattr(error, "problems", None) or []]
        self.completed_at = now_iso()
        self.predict_time = run_time if run_time is not None else time.monotonic() - self._t0
        self.done.set()
        for hook in self.on_finish:
            hook()
        if self.listeners:
            self.emit("completed", self.to_json())
        self._let_go()

    def _let_go(self) -> None:
        """A finished record is kept (retention) only for what it says: it drops the call,
        its files, its hooks and listeners. They referred back to it (cycles), and through
        its workspace to the whole request that made it (uvicorn's cycle, the middleware's
        closures: ~50 objects), so a pruned record was freed only by a full collection of
        the garbage collector, which with the serving thresholds (gctune.py) came rarely
        and then walked millions of objects: a 3.3 s stall after ~80,000 predictions.
        Now dropping a record frees it at once."""
        self.handle = None
        self.workspace = None
        self.on_finish.clear()
        self.listeners.clear()

    def on_event(self, event: Any) -> None:
        """A corral event of the call: Log, Progress or Metric."""
        kind = type(event).__name__
        if kind == "Log":
            self.add_log(event.text)
        elif kind == "Progress":
            self.emit("progress", {"step": event.step, "total": event.total,
                                   "phase": event.phase})
        elif kind == "Metric":
            if event.value is None:  # Cog: None deletes the metric
                self.metrics.pop(event.name, None)
            elif event.mode == "increment":
                self.metrics[event.name] = self.metrics.get(event.name, 0) + event.value
            elif event.mode == "append":
                self.metrics.setdefault(event.name, []).append(event.value)
            else:
                self.metrics[event.name] = event.value
            self.emit("metric", {"name": event.name, "value": jsonable(event.value),
                                 "mode": event.mode})


class _Handoff:
    """The on_event callback of a prediction's call: hands events to ``handle`` on
    ``loop``. Events read on another thread (the connection's reader) are handed over in
    batches: one wake-up of the loop per batch, not per line (a model printing 100,000
    lines would otherwise queue 100,000 callbacks). Events read on the loop itself (it
    reads its own replies when it can) are handled at once, after any batch still waiting.
    Order is kept, and the record drains what waits before it finishes (``drain()`` from
    the settle callback), so every event is in the record before its result."""

    __slots__ = ("loop", "handle", "lock", "pending", "tid")

    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[Any], None]):
        self.loop = loop
        self.handle = handle
        self.lock = threading.Lock()
        self.pending: list[Any] = []
        self.tid = threading.get_ident()  # the loop's thread (made on the loop)

    def drain(self) -> None:
        with self.lock:
            batch = self.pending[:]
            self.pending.clear()
        for event in batch:
            self.handle(event)

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.pending.append(event)
            first = len(self.pending) == 1
        if threading.get_ident() == self.tid:
            self.drain()
        elif first:
            self.loop.call_soon_threadsafe(self.drain)


class Predictions:
    """Every prediction of one app, and how they run on ``runner``'s ``predict``."""

    def __init__(self, runner: Runner, method: str = "predict",
                 retention: Retention | None = None, files: Any = None,
                 max_log_bytes: int | None = None):
        self.runner = runner
        self.method = method
        # Per prediction; None: CORRAL_MAX_LOG_BYTES or 1 MiB, read once here (an
        # environment lookup per request cost more than the rest of the record).
        self.max_log_bytes = default_max_log_bytes() if max_log_bytes is None \
            else max_log_bytes
        self.files = files  # files.Files: output conversion, or None
        self.records: dict[str, Prediction] = {}
        self.retention = retention if retention is not None else Retention()
        #: Called with each new record before it starts (to attach webhooks, SSE).
        self.on_create: list[Callable[[Prediction], None]] = []
        self._tasks: set[asyncio.Task] = set()
        self._random = ""  # hex of random bytes for ids, used up to _random_at
        self._random_at = 0

    @property
    def streams(self) -> bool:
        info = self.runner.methods.get(self.method)
        return bool(info is not None and info.streams)

    def _new_id(self) -> str:
        """A random 128-bit id in hex (as a uuid4's): unguessable, so one client cannot
        read another's predictions by counting. The kernel's randomness is read 256 ids at
        a time: one getrandom() per id cost more than the rest of the record."""
        at = self._random_at
        if at >= len(self._random):
            self._random, at = os.urandom(16 * 256).hex(), 0
        self._random_at = at + 32
        return self._random[at:at + 32]

    def get(self, pid: str) -> Prediction | None:
        return self.records.get(pid)

    def start(self, input: dict[str, Any], pid: str | None = None,
              webhook: str | None = None, events_filter: list[str] | None = None,
              listeners: tuple[Callable[[str, Any], None], ...] = (),
              args: dict[str, Any] | None = None, workspace: Any = None,
              context: dict[str, Any] | None = None) -> Prediction:
        """Make the record and submit it (on the event loop). ``input`` is what the record
        shows, ``args`` what the method gets (``input`` unless given: files differ), and
        ``workspace`` its files, which the record removes when it ends; ``context`` is
        the request's (Cog's ``current_scope().context``, corral's ``current().context``). Raises QueueFull
        when no room is left, and MethodNotFound/InvalidState as the runner does; no
        record is kept then (the caller still owns ``workspace``)."""
        self.retention.prune(self.records)
        pred = Prediction(pid or self._new_id(), input, webhook, events_filter,
                          self.max_log_bytes)
        pred.listeners.extend(listeners)
        if args is None:
            args = input
        loop = asyncio.get_running_loop()
        sent = True
        if self.streams:
            self._check_room()
            stream = self.runner.options(convert=True, context=context).awatch(self.method,
                                                                                **args)
            pred.handle = stream
            coro = self._follow_stream(pred, stream)
        else:
            # asubmit: a Worker's event loop then reads the reply itself (no hand-off
            # from the connection's reader thread).
            handoff = _Handoff(loop, pred.on_event)
            fut = self.runner.options(on_event=handoff, convert=True,
                                      context=context).asubmit(self.method, **args)
            pred.handle = fut
            coro = None
            sent = not fut.queued  # queued: waiting in a Pool's queue
        self.records[pred.id] = pred
        pred.workspace = workspace

        def on_finish() -> None:
            if pred.workspace is not None:
                pred.workspace.close()
            self.retention.finished(pred.id)
            self.retention.prune(self.records)

        pred.on_finish.append(on_finish)
        for hook in self.on_create:
            hook(pred)
        if sent:
            pred.mark_started()
        else:
            pred.handle.add_sent_callback(
                lambda: loop.call_soon_threadsafe(pred.mark_started))
        if coro is None:
            # The record finishes the moment the call settles (no task per prediction; a
            # handler awaiting pred.done resumes on the next turn of the loop).
            pred.handle.add_settle_callback(lambda fut: self._settled(pred, fut, handoff))
        else:
            self._track(loop.create_task(coro))
        return pred

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_room(self) -> None:
        capacity = self.runner.capacity
        if capacity is None:  # it never refuses a call (a Worker)
            return
        load = self.runner.load
        if load >= capacity:
            raise QueueFull(f"the pool is full: {load} calls in flight or queued "
                            f"(capacity {capacity}: slots={self.runner.slots} and its queue)")

    def _settled(self, pred: Prediction, fut: Any, handoff: _Handoff) -> None:
        """The call of ``pred`` settled (on the loop): finish its record, after its
        events and after turning output files into data: URLs or links (in a task: that
        reads files)."""
        handoff.drain()
        if fut.cancelled():
            pred.finish("canceled")
            return
        exc = fut.exception()
        if isinstance(exc, Cancelled):
            pred.finish("canceled")
            return
        if exc is not None:
            pred.finish("failed", error=exc)
            return
        value = fut.result()
        if self.files is not None and has_files(value):
            self._track(asyncio.get_running_loop().create_task(
                self._finish_with_files(pred, value, fut.run_time)))
        else:
            pred.finish("succeeded", value, run_time=fut.run_time)

    async def _finish_with_files(self, pred: Prediction, value: Any,
                                 run_time: float | None) -> None:
        try:
            value = await self.files.outputs(value, pred.workspace)
        except Exception as exc:  # noqa: BLE001 - an output file that cannot be sent
            pred.finish("failed", error=exc)
            return
        pred.finish("succeeded", value, run_time=run_time)

    async def _follow_stream(self, pred: Prediction, stream: Any) -> None:
        try:
            async for item in stream:
                kind = type(item).__name__
                if kind == "Chunk":
                    value = item.value
                    if self.files is not None:
                        try:
                            value = await self.files.outputs(value, pred.workspace)
                        except Exception as exc:  # noqa: BLE001 - a file that cannot be sent
                            pred.finish("failed", error=exc)
                            stream.cancel()
                            return
                    pred.add_chunk(value)
                elif kind == "Done":
                    if pred.output is None:
                        pred.output = []
                    pred.finish("succeeded", run_time=item.run_time)
                else:
                    pred.on_event(item)
        except (Cancelled, asyncio.CancelledError):
            pred.finish("canceled")
        except Exception as exc:  # noqa: BLE001
            pred.finish("failed", error=exc)
        if not pred.finished:
            pred.finish("canceled")

    def cancel(self, pred: Prediction) -> bool:
        """Cancel through the runner's future (or stream); the record turns canceled."""
        if pred.finished:
            return False
        handle = pred.handle
        if handle is not None:
            handle.cancel()
        return True

    async def aclose(self) -> None:
        for pred in list(self.records.values()):
            self.cancel(pred)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
