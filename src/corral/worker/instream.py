"""Streamed arguments in the worker: the iterator a method receives for an argument the
caller gave as an iterator, generator or async iterator.

The host sends the argument chunk by chunk (``InChunk``, then ``InEnd``) while its
producer runs; the main thread routes each chunk here by call id (chunks of a call not
read yet wait for it; those of a call that ended are dropped, and their shared memory
goes back with them). The method iterates an ``InputStream`` (``for`` in a sync method,
``async for`` in an async one) and, as it takes chunks, gives the host credit for more
(``InCredit``), so that at most a window of chunks waits here: a slow method slows the
producer down. A call with streamed inputs never runs inline on the main thread, which
must go on reading to feed it.

A cancel (or the call's deadline) wakes a method waiting for a chunk and stops it there.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

from ..protocol import messages as m
from .cancel import ARM_LOCK, CallCancelled, leave_user_code
from .scope import _current

_END = object()


class InputStream:
    """One streamed argument, as the method sees it: an iterator (and an async iterator)
    of the chunks the caller produces, in order, ending when the caller's iterator ends."""

    def __init__(self, call_id: int, slot: int, window: int, send: Callable[[Any], Any],
                 take_release: Callable[[], Any]):
        self._id = call_id
        self._slot = slot
        self._send = send
        self._take_release = take_release
        self._items: deque = deque()
        self._cond = threading.Condition(threading.Lock())
        self._error: BaseException | None = None
        self._over = False
        self._taken = 0
        self._batch = max(1, window // 2)  # credit goes back in batches of half the window
        self._loop: Any = None
        self._waiter: Any = None

    def __repr__(self) -> str:
        return f"<corral InputStream call={self._id} slot={self._slot}>"

    # -- the main thread's side --------------------------------------------------------------

    def _put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._wake()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._items.clear()
            self._wake()

    def _wake(self) -> None:
        self._cond.notify_all()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self._loop.call_soon_threadsafe(_resolve, waiter)

    # -- the method's side -------------------------------------------------------------------

    def __iter__(self) -> "InputStream":
        return self

    def __next__(self) -> Any:
        if self._over:
            raise StopIteration
        with self._cond:
            while not self._items and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            item = self._items.popleft()
        return self._took(item, StopIteration)

    def __aiter__(self) -> "InputStream":
        return self

    async def __anext__(self) -> Any:
        import asyncio

        if self._over:
            raise StopAsyncIteration
        while True:
            with self._cond:
                if self._error is not None:
                    raise self._error
                if self._items:
                    item = self._items.popleft()
                    break
                self._loop = loop = asyncio.get_running_loop()
                self._waiter = waiter = loop.create_future()
            await waiter
        return self._took(item, StopAsyncIteration)

    def _grant(self, n: int) -> None:
        # The chunks the method dropped ride on the credit, in the same frame: were they
        # sent on their own (control channel), the feeder could take the credit first and
        # make new segments while these still looked lent.
        self._send(m.InCredit(self._id, self._slot, n, self._take_release()))

    def _took(self, item: Any, end: type[BaseException]) -> Any:
        if item is _END:
            self._over = True
            raise end
        self._taken += 1
        if self._taken >= self._batch:
            n, self._taken = self._taken, 0
            _outside_user_code(self._id, lambda: self._grant(n))
        return item


def _resolve(fut: Any) -> None:
    if not fut.done():
        fut.set_result(None)


def _outside_user_code(call_id: int, fn: Callable[[], Any]) -> None:
    """Run ``fn`` (frames to send) on the method's own thread outside user code: a cancel
    exception must not land in the middle of a frame (cancel.py); one that came meanwhile
    is raised right after."""
    scope = _current.get()
    if scope is None or scope.id != call_id or not scope._in_user or scope._loop is not None:
        fn()  # (an async call is only cancelled at an await)
        return
    leave_user_code(scope)
    try:
        fn()
    finally:
        with ARM_LOCK:
            scope._in_user = True
    if scope._requested:  # it could not be armed while out: raise it here
        raise CallCancelled()


class Inputs:
    """The streamed arguments of the calls read so far, by call id."""

    def __init__(self, send: Callable[[Any], Any], take_release: Callable[[], Any]):
        self._send = send
        self._take_release = take_release
        self._calls: dict[int, list[InputStream]] = {}
        self._early: dict[int, list[Any]] = {}  # chunks that overtook their call

    def open(self, call: m.Call) -> None:
        """The main thread read ``call``: put an InputStream in place of each streamed
        argument and hand it the chunks that came first."""
        streams = []
        for slot, (where, window) in enumerate(call.streams.inputs):
            stream = InputStream(call.id, slot, int(window), self._send,
                                 self._take_release)
            if isinstance(where, int):
                call.args[where] = stream
            else:
                call.kwargs[where] = stream
            streams.append(stream)
        self._calls[call.id] = streams
        if self._early:
            for early_id in [i for i in self._early if i < call.id]:
                del self._early[early_id]  # (calls never sent: cancelled on the host)
            for msg in self._early.pop(call.id, ()):
                self.deliver(msg, call.id)

    def deliver(self, msg: Any, last_seen: int) -> None:
        """Route an InChunk or InEnd read by the main thread."""
        streams = self._calls.get(msg.id)
        if streams is None:
            if msg.id > last_seen:  # its Call is still on the way
                self._early.setdefault(msg.id, []).append(msg)
            return  # a call that ended: dropped (its shared memory goes back with it)
        if not 0 <= msg.slot < len(streams):
            return
        streams[msg.slot]._put(_END if type(msg) is m.InEnd else msg.value)

    def cancel(self, call_id: int) -> None:
        for stream in self._calls.get(call_id, ()):
            stream._fail(CallCancelled())

    def refuse(self, call_id: int, error: BaseException) -> None:
        """A chunk of ``call_id`` could not be decoded: its method gets ``error``."""
        for stream in self._calls.get(call_id, ()):
            stream._fail(error)

    def close(self, call_id: int) -> None:
        """The call ended: chunks still waiting are dropped."""
        for stream in self._calls.pop(call_id, ()):
            with stream._cond:
                stream._items.clear()
