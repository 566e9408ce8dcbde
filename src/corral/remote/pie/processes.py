"""Launched PIE programs: one corral worker each, owned by the identity that launched it.

A :class:`PieProcess` pumps its worker's event stream to the client attached to it (the
launcher, or whoever attached later), or into a bounded backlog while none is. Its events
are PIE's: ``stdout``/``stderr``/``message`` text, ``file`` chunks, then one terminal
``return`` or ``error``. Terminate kills the process at once (a busy loop included) and the
client gets ``error "Signal"``, as from PIE. :class:`ProcessTable` finds a process only for
its owner: to anyone else it does not exist.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from typing import Any, Protocol

import blake3

from ...exceptions import CorralError
from ...protocol import messages as m
from . import frames as f
from .warm import ProgramWorker

log = logging.getLogger("corral.pie")

BACKLOG_FRAMES = 4096  # kept for a detached process, oldest dropped first


class Sink(Protocol):
    """Where a process's frames go (a client session)."""

    async def send(self, data: bytes) -> bool: ...


class PieProcess:
    def __init__(self, worker: ProgramWorker, owner: str, program: str, input: str,
                 captured: bool, sink: Sink | None):
        self.id = str(uuid.uuid4())
        self.worker = worker
        self.owner = owner
        self.program = program
        self.input = input
        self.captured = captured  # ends with the session that launched it
        self.launcher = sink
        self.sink: Sink | None = sink if captured else None
        self.started = time.monotonic()
        self.backlog: collections.deque[bytes] = collections.deque(maxlen=BACKLOG_FRAMES)
        self.terminated = False
        self.finished = asyncio.Event()
        self._emit_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    def start(self, source: str, entry: str, call: str, on_end: Any) -> None:
        name = self.program.split("@", 1)[0]
        stream = self.worker.awatch("run", source, name, entry, call, self.input)
        self._task = asyncio.ensure_future(self._pump(stream, on_end))

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.owner.split("/", 1)[-1],
                "program": self.program, "input": self.input,
                "elapsed_secs": round(time.monotonic() - self.started, 3)}

    # -- out --------------------------------------------------------------------------------

    async def _emit(self, data: bytes) -> None:
        async with self._emit_lock:
            sink = self.sink
            if sink is not None and await sink.send(data):
                return
            if sink is not None:
                self.sink = None  # its connection is gone
            self.backlog.append(data)

    async def _event(self, event: str, value: str) -> None:
        await self._emit(f.encode(f.ProcessEvent(self.id, event, value)))

    async def _file(self, data: bytes, name: str | None) -> None:
        digest = blake3.blake3(data).hexdigest()
        total = max(1, -(-len(data) // f.CHUNK_SIZE))
        for i in range(total):
            chunk = data[i * f.CHUNK_SIZE:(i + 1) * f.CHUNK_SIZE]
            await self._emit(f.encode(f.FileChunk(self.id, digest, i, total, chunk, name)))

    async def _pump(self, stream: Any, on_end: Any) -> None:
        try:
            async for item in stream:
                kind = type(item)
                if kind is m.Chunk:
                    for ev in item.value:
                        if ev[0] == "file":
                            await self._file(ev[1], ev[2])
                            continue
                        if ev[0] in ("return", "error"):
                            on_end(self)  # gone from list_processes once its end is seen
                        await self._event(ev[0], ev[1])
                elif kind is m.Log:  # fd-level output (C code, subprocesses)
                    await self._event(item.stream if item.stream in ("stdout", "stderr")
                                      else "stderr", item.text + "\n")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the process ended: its client is told
            on_end(self)
            if self.terminated:
                await self._event("error", "Signal")
            else:
                log.info("pie process %s (%s) ended: %s", self.id, self.program, exc)
                await self._event("error", f"corral: the program's process ended: {exc}")
        finally:
            self.finished.set()
            on_end(self)
            await asyncio.to_thread(self.worker.kill)

    # -- in ---------------------------------------------------------------------------------

    async def deliver(self, kind: str, payload: Any) -> None:
        await self.worker.acall("deliver", kind, payload)

    def send_in(self, kind: str, payload: Any) -> None:
        """``deliver`` without waiting (in order with every other delivery); a failure
        (the process ended) is logged."""
        try:
            fut = self.worker.asubmit("deliver", kind, payload)
        except CorralError as exc:
            log.info("pie process %s: %s not delivered: %s", self.id, kind, exc)
            return
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None and not self.finished.is_set():
            log.info("pie process %s: a delivery failed: %s", self.id, fut.exception())

    async def attach(self, sink: Sink) -> bool:
        """Make ``sink`` the client; replays the backlog. False if another is attached."""
        async with self._emit_lock:
            if self.sink is not None:
                return False
            self.sink = sink
            while self.backlog:
                if not await sink.send(self.backlog.popleft()):
                    self.sink = None
                    return False
            return True

    def detach(self, sink: Sink) -> None:
        if self.sink is sink:
            self.sink = None

    async def terminate(self, wait: float = 5.0) -> None:
        """Kill the process now and wait (bounded) for its terminal event to go out."""
        self.terminated = True
        await asyncio.to_thread(self.worker.kill)
        try:
            await asyncio.wait_for(self.finished.wait(), wait)
        except asyncio.TimeoutError:
            log.warning("pie process %s did not report its end in %.1fs", self.id, wait)


class ProcessTable:
    """Every live process, found by id only for its owner."""

    def __init__(self) -> None:
        self._by_id: dict[str, PieProcess] = {}

    def add(self, proc: PieProcess) -> None:
        self._by_id[proc.id] = proc

    def remove(self, proc: PieProcess) -> None:
        self._by_id.pop(proc.id, None)

    def find(self, process_id: str, owner: str) -> PieProcess | None:
        proc = self._by_id.get(process_id)
        return proc if proc is not None and proc.owner == owner else None

    def owned_by(self, owner: str) -> list[PieProcess]:
        return [p for p in self._by_id.values() if p.owner == owner]

    def all(self) -> list[PieProcess]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
