"""One PIE program inside a corral worker process (the worker's target).

The host loads ``corral.remote.pie.guest:Guest`` with two slots: ``run`` (an async generator)
runs the program and streams its events; ``deliver`` hands it what the client sends while it
runs (``signal_process`` messages, ``transfer_file`` payloads). A process runs one program
and is then thrown away, so the program may change anything in it.

The program is called as PIE calls it: ``fn(**input)`` for ``call = "kwargs"``, else
``fn(input)``; awaited if it returns an awaitable; a sync function runs on a thread of its
own so that its output streams while it runs. A str return passes through, anything else is
``json.dumps``ed; an exception becomes an ``error`` event with the program's own traceback.

Events go out in batches: each item of ``run``'s stream is a list of ``[event, value]``
(``[ "file", data, name ]`` for files), consecutive writes to one stream merged, so a
program printing 1000 lines costs a few messages, not 2000.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import json
import linecache
import sys
import threading
import traceback
from typing import Any, AsyncIterator

from . import inferlet

__all__ = ["Guest"]


class _Stream:
    """sys.stdout / sys.stderr of the program: each write becomes an event."""

    def __init__(self, guest: "Guest", name: str):
        self._guest = guest
        self.name = name
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._guest.emit(self.name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1 if self.name == "stdout" else 2


class Guest:
    """The worker's target: runs one program and carries its events both ways."""

    def __init__(self) -> None:
        # An async program runs on the worker's loop, beside ``run`` and ``deliver``: a
        # signal reaches it, and its messages leave, with no thread hop. A sync program
        # runs on a thread, so its output streams while it runs. (An async program that
        # blocks its loop has its output sent when it yields, or when it ends.)
        self.signals: asyncio.Queue[str] = asyncio.Queue()
        self.files: asyncio.Queue[bytes] = asyncio.Queue()
        self._out: list[list[Any]] = []
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._started = False
        self._incoming: dict[int, list[Any]] = {}  # file id -> [buffer, bytes in, chunks]

    async def setup(self) -> None:
        # Runs while the process is still warm-pool stock, so that a launch pays for none
        # of it: the worker's loop, and the thread a sync program runs on.
        await asyncio.to_thread(lambda: None)

    # -- events out -----------------------------------------------------------------------

    def emit(self, event: str, value: str) -> None:
        with self._lock:
            out = self._out
            last = out[-1] if out else None
            if last is not None and last[0] == event and event in ("stdout", "stderr"):
                last[1] += value
                return
            out.append([event, value])
            first = len(out) == 1
        if first:
            self._wakeup()

    def emit_file(self, data: bytes, name: str | None) -> None:
        with self._lock:
            self._out.append(["file", data, name])
        self._wakeup()

    def _wakeup(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            if threading.get_ident() == self._loop_thread:
                wake.set()
            else:
                loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closing: the process is going
            pass

    def _take(self) -> list[list[Any]]:
        with self._lock:
            out, self._out = self._out, []
        return out

    # -- the two methods ------------------------------------------------------------------

    async def deliver(self, kind: str, payload: Any) -> None:
        """Queue what the client sent: ``("signal", str)`` or ``("file", bytes)``."""
        if kind == "signal":
            queue = self.signals
        elif kind == "file":
            queue = self.files
        elif kind in ("file_begin", "file_chunk", "file_end", "file_abort"):
            payload = self._assemble(kind, payload)
            if payload is None:
                return
            queue = self.files
        else:
            raise ValueError(f"deliver: unknown kind {kind!r}")
        queue.put_nowait(payload)

    def _assemble(self, kind: str, payload: Any) -> bytes | None:
        # A file arriving chunk by chunk (its hash is checked by the host, which ends it
        # with file_end, or file_abort). The buffer is sized from the first chunk, so that
        # each chunk is copied once and its own memory reused for the next.
        if kind == "file_begin":
            fid, total = payload
            self._incoming[fid] = [None, 0, total]
            return None
        if kind == "file_abort":
            self._incoming.pop(payload, None)
            return None
        if kind == "file_end":
            buf, used, _ = self._incoming.pop(payload)
            if buf is None:
                return b""
            del buf[used:]
            return bytes(buf)
        fid, data = payload
        entry = self._incoming[fid]
        if entry[0] is None:
            entry[0] = bytearray(len(data) * entry[2])
        used = entry[1]
        entry[0][used:used + len(data)] = data
        entry[1] = used + len(data)
        return None

    async def run(self, source: str, name: str, entry: str, call: str,
                  input: str) -> AsyncIterator[list[list[Any]]]:
        """Run the program; yield its events in batches, the last one ending with
        ``["return", text]`` or ``["error", traceback]``."""
        if self._started:
            raise RuntimeError("a guest process runs one program")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = wake = asyncio.Event()
        inferlet.install()
        inferlet.session._guest = self
        sys.stdout = _Stream(self, "stdout")
        sys.stderr = _Stream(self, "stderr")
        done = asyncio.ensure_future(self._main(source, name, entry, call, input))
        while not done.done():
            waiter = asyncio.ensure_future(wake.wait())
            await asyncio.wait((done, waiter), return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            wake.clear()
            batch = self._take()
            if batch:
                yield batch
        batch = self._take()
        batch.append(done.result())
        yield batch

    async def _main(self, source: str, name: str, entry: str, call: str,
                    input: str) -> list[str]:
        filename = f"{name}.py"
        try:
            fn = _load(source, filename, entry)
            args = json.loads(input) if input else {}
            if call == "kwargs":
                if not isinstance(args, dict):
                    raise TypeError(f"call = \"kwargs\" needs a JSON object as input, "
                                    f"not {type(args).__name__}")
                thunk = lambda: fn(**args)  # noqa: E731
            else:
                thunk = lambda: fn(args)  # noqa: E731
            if inspect.iscoroutinefunction(fn):
                result = await thunk()
            else:
                result = await asyncio.to_thread(thunk)
                if inspect.isawaitable(result):
                    result = await result
            text = result if isinstance(result, str) else json.dumps(result)
            return ["return", text]
        except (Exception, SystemExit) as exc:  # noqa: BLE001 (the program's failure is its error event)
            return ["error", _program_traceback(exc, filename)]


def _load(source: str, filename: str, entry: str) -> Any:
    # In linecache, so that tracebacks quote the program's own lines.
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    code = compile(source, filename, "exec")
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": filename,
                                 "__builtins__": builtins}
    exec(code, namespace)
    fn = namespace.get(entry)
    if not callable(fn):
        raise NameError(f"the program defines no function {entry!r} (its [runtime] entry)")
    return fn


def _program_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the program's first frame on (the guest's own frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if tb is None and not isinstance(exc, SyntaxError):
        tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb))
