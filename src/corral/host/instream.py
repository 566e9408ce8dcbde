"""Streamed arguments on the host: an iterator, generator or async iterator given as an
argument is sent to the worker chunk by chunk while the caller's code produces it.

::

    w.stream("transcribe", audio_chunks())     # the method receives an iterator
        │ Call(streams.inputs=[[0, window]])  then, per chunk, within the worker's credit:
        ▼
    feeder (a thread; a task on the caller's loop for an async iterator)
        next(source) ─► InChunk(id, slot, value) ─► data socket ─► worker/instream.py
        ◄──────── InCredit(id, slot, n, release) ◄── as the method takes chunks (with
                                                     the leases of chunks it dropped)
        end of source ─► InEnd(id, slot)

Each chunk goes through the value codec (big arrays and bytes through shared memory).
At most ``window`` chunks are in flight: a method slower than its producer slows the
producer down. When the call ends (result, error, cancel, deadline, crash) the feeder
stops and closes the source. When the source raises, the call is cancelled in the
worker and the caller gets ``StreamInputError`` from the producer's exception; a chunk
the codec cannot send fails the call with its TypeError.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..exceptions import StreamInputError
from ..protocol import messages as m
from ..protocol.values import to_wire

#: Seconds between a starved feeder's checks that its call is still on (a call can end
#: in many ways, a grant comes in one; this bounds how long a finished call's feeder lives).
_RECHECK = 0.05


def is_streamed(value: Any) -> bool:
    """An argument sent chunk by chunk: an iterator or async iterator (a generator, a
    file, ``iter(list)``...), not a value that is merely iterable (a list, an array)."""
    return isinstance(value, (Iterator, AsyncIterator))


class Feed:
    """The streamed arguments of one call, and what sends them."""

    def __init__(self, args: list, kwargs: dict, inputs: list, sources: list, window: int):
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs  # [[where, window], ...] as the Call carries it
        self._sources = sources  # [(where as text, iterator), ...], by slot
        self._window = window
        self._cond = threading.Condition(threading.Lock())
        self._credit = [window] * len(sources)
        self._conn: Any = None
        self._sink: Any = None
        self._events: list = []  # an async feeder's wake-up, per slot (or None)
        self._loop: Any = None
        self._tasks: list = []  # (asyncio keeps only weak references to tasks)

    @classmethod
    def split(cls, args: tuple, kwargs: dict, window: int) -> "Feed | None":
        """The streamed arguments of a call, each replaced by a placeholder; None when
        there is none."""
        sources: list = []
        inputs: list = []
        new_args = list(args)
        for i, a in enumerate(new_args):
            if is_streamed(a):
                inputs.append([i, window])
                sources.append((f"args[{i}]", a))
                new_args[i] = None
        new_kwargs = dict(kwargs)
        for k, v in new_kwargs.items():
            if is_streamed(v):
                inputs.append([k, window])
                sources.append((f"kwargs[{k!r}]", v))
                new_kwargs[k] = None
        if not sources:
            return None
        return cls(new_args, new_kwargs, inputs, sources, window)

    def start(self, conn: Any, sink: Any, allow_pickle: bool) -> None:
        """The call was registered on ``conn``: start sending its streamed arguments."""
        self._conn, self._sink, self._allow_pickle = conn, sink, allow_pickle
        sink._feed = self
        for slot, (where, source) in enumerate(self._sources):
            if isinstance(source, AsyncIterator):
                import asyncio

                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    self._refuse(TypeError(
                        f"{where} of {sink.method}() is an async iterator: call it with "
                        "acall()/asubmit()/astream() from a running event loop, or pass a "
                        "sync iterator"))
                    return
                self._loop = loop
                self._events.append(asyncio.Event())
                self._tasks.append(loop.create_task(self._run_async(slot, where, source)))
            else:
                self._events.append(None)
                threading.Thread(target=self._run, args=(slot, where, source), daemon=True,
                                 name=f"corral-feed-{sink.id}-{slot}").start()

    def credit(self, slot: int, n: int) -> None:
        """The worker took ``n`` more chunks of ``slot`` (the connection's reader)."""
        if not 0 <= slot < len(self._credit):
            return
        with self._cond:
            self._credit[slot] += n
            self._cond.notify_all()
        event = self._events[slot] if slot < len(self._events) else None
        if event is not None:
            self._loop.call_soon_threadsafe(event.set)

    # -- a sync source: a thread -----------------------------------------------------------

    def _on(self) -> bool:
        return self._conn.holds(self._sink)

    def _turn(self, slot: int) -> bool:
        """Wait until the call is on the wire and has credit for one more chunk of
        ``slot``; False once the call ended."""
        sink = self._sink
        with self._cond:
            while not sink._sent or self._credit[slot] <= 0:
                if not self._on():
                    return False
                self._cond.wait(_RECHECK)
            if not self._on():
                return False
            self._credit[slot] -= 1
            return True

    def _run(self, slot: int, where: str, source: Any) -> None:
        count = 0
        try:
            while self._turn(slot):
                try:
                    item = next(source)
                except StopIteration:
                    self._conn.send_stream(m.InEnd(self._sink.id, slot))
                    return
                except BaseException as exc:  # noqa: BLE001 - the producer's error, the caller's
                    self._producer_failed(where, count, exc)
                    return
                self._send_chunk(slot, where, count, item)
                count += 1
            _close(source)  # the call ended first
        except OSError:
            _close(source)  # the worker is gone: the connection fails the call
        except Exception as exc:  # noqa: BLE001 - a chunk the codec refused: the call's error
            _close(source)
            self._refuse(exc)

    def _send_chunk(self, slot: int, where: str, count: int, item: Any) -> None:
        value = to_wire(item, allow_pickle=self._allow_pickle, exporter=self._conn.exporter,
                        where=f"chunk {count} of {where}")
        self._conn.send_stream(m.InChunk(self._sink.id, slot, value))

    def _producer_failed(self, where: str, count: int, exc: BaseException) -> None:
        sink = self._sink
        error = StreamInputError(
            f"{where} of call {sink.id} ({sink.method}) raised {type(exc).__name__}: {exc} "
            f"after {count} chunks; the call was cancelled", argument=where, chunks=count)
        error.__cause__ = exc
        sink._cancel_with(error)

    def _refuse(self, error: BaseException) -> None:
        self._sink._cancel_with(error)

    # -- an async source: a task on the caller's loop ------------------------------------------

    async def _aturn(self, slot: int) -> bool:
        import asyncio

        sink, event = self._sink, self._events[slot]
        while True:
            with self._cond:
                if not self._on():
                    return False
                if sink._sent and self._credit[slot] > 0:
                    self._credit[slot] -= 1
                    return True
                event.clear()
            try:
                await asyncio.wait_for(event.wait(), _RECHECK)
            except asyncio.TimeoutError:
                pass

    async def _run_async(self, slot: int, where: str, source: Any) -> None:
        count = 0
        try:
            while await self._aturn(slot):
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    self._conn.send_stream(m.InEnd(self._sink.id, slot))
                    return
                except Exception as exc:  # noqa: BLE001 - the producer's error, the caller's
                    self._producer_failed(where, count, exc)
                    return
                self._send_chunk(slot, where, count, item)
                count += 1
            await _aclose(source)
        except OSError:
            await _aclose(source)
        except Exception as exc:  # noqa: BLE001 - a chunk the codec refused
            await _aclose(source)
            self._refuse(exc)


def _close(source: Any) -> None:
    close = getattr(source, "close", None)  # (a generator, a file: stop it where it is)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - the call is over; its source's cleanup is its own
            pass


async def _aclose(source: Any) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001
            pass
