"""The worker process: handshake, load the target, then serve calls until told to stop.

Threads: the main thread reads the data socket and runs sync calls inline when there is one
slot (when every method is async, the event loop that runs them reads it instead); ``corral-control`` reads the control socket (reload, ping, cancel, shutdown; its end of stream
means the host is gone, and the worker exits at once); ``corral-capture`` forwards fd-level
output. The worker also asks the kernel to kill it when its parent dies (Linux). On Linux the
process the host starts first splits in two (keeper.py): the parent stays as the keeper,
which ends whatever the worker started when the worker or the host ends; the child is the
worker, and its parent (the one it dies with) is the keeper.
"""

from __future__ import annotations

import _socket  # (not socket: protocol/framing.py says why)
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from .. import _version
from ..protocol import messages as m
from ..protocol.endpoint import Endpoint
from ..protocol.framing import DEFAULT_MAX_FRAME, NOT_READY
from ..protocol.values import make_decoder
from ..protocol.version import PROTOCOL_VERSION
from .cancel import CallCancelled
from .capture import Capture
from .errors import error_info
from .loader import ConfigProblems, Loaded, _describe, build, check_config, resolve
from .replies import Replies
from .runner import Runner


def _die_with_parent(parent_pid: int, pdeathsig: bool) -> None:
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(0)


class WorkerProcess:
    def __init__(self, control_fd: int, data_fd: int, fds_fd: int, max_frame: int):
        self.endpoint = ep = Endpoint(_socket.socket(fileno=control_fd),
                                      _socket.socket(fileno=data_fd),
                                      _socket.socket(fileno=fds_fd), max_frame, max_frame)
        self.control, self.data, self.fds = ep.control, ep.data, ep.fds
        self.control_in, self.data_in = ep.control_in, ep.data_in
        self.control_out, self.data_out = ep.control_out, ep.data_out
        self.runner: Runner | None = None
        self.capture = Capture(self._worker_log, self._fd_target)
        self.started = time.monotonic()

    def _worker_log(self, stream: str, text: str) -> None:
        try:
            self.control_out.send(m.WorkerLog(stream, text))
        except OSError:
            pass

    def _fd_target(self) -> Any:
        if self.capture.setup_sink is not None:
            return self.capture.setup_sink
        return self.runner.fd_target() if self.runner is not None else None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        self.capture.install()
        import faulthandler

        faulthandler.enable(file=self.capture.original_stderr, all_threads=True)
        self.control_out.send(m.Hello(PROTOCOL_VERSION, _version.__version__, os.getpid(),
                                      sys.executable))
        init = self._read_control()
        if not isinstance(init, m.Init):
            raise SystemExit(f"corral worker: expected Init, got {type(init).__name__}")
        # Big results go out through the exporter; big arguments come in through the importer.
        self.shm = self.endpoint.link(init.oob_threshold)
        self.importer, self.exporter = self.shm.importer, self.shm.exporter
        self.replies = Replies(self.data_out, self.data_in)
        self.runner = Runner(init.slots, self.data_out.send, self.capture, init.allow_pickle,
                             self.exporter, self.flush_releases, self.shm.take_release,
                             reply=self.replies.send, reply_soon=self.replies.send_soon)
        self.allow_pickle = init.allow_pickle
        loaded = self._setup(0, lambda: self._resolve(init), init.config, init.check_config,
                             init.check_only)
        if loaded is None:
            return  # SetupFailed was sent; the host reaps us
        from .cancel import install_handler
        from .scope import _current

        install_handler(_current.get)  # before any call can run, and on the main thread
        threading.Thread(target=self._control_loop, name="corral-control", daemon=True).start()
        if self.runner.all_async():
            self._data_on_loop()
        else:
            self._data_loop()

    def _resolve(self, init: m.Init) -> Any:
        self.found = resolve(init.target, init.allow_pickle)
        return self.found

    def _read_control(self) -> Any:
        frame = self.control_in.read()
        if frame is None:
            os._exit(0)  # the host is gone
        return self._control_decoder.decode(frame)

    _control_decoder = make_decoder(m.HostControl)

    def _setup(self, seq: int, find: Any, config: dict[str, Any],
               check: bool = False, only: bool = False) -> Loaded | None:
        sink = self.capture.setup_sink = _setup_sink()
        t0 = time.perf_counter()
        try:
            obj = find()
            if check or only:
                config = check_config(obj, config)
            # Checked only: nothing is built and nothing is callable.
            loaded = Loaded(None, _describe(obj), {}) if only else \
                build(obj, config, self.runner.run_coroutine)
        except BaseException as exc:  # noqa: BLE001 - setup failures are reported, not raised
            self.capture.drain()
            sink.flush_partial()
            self.capture.setup_sink = None
            kind = "config" if isinstance(exc, ConfigProblems) else "user"
            self.control_out.send(m.SetupFailed(seq, error_info(exc, kind=kind), sink.lines))
            return None
        self.capture.drain()
        sink.flush_partial()
        self.capture.setup_sink = None
        methods = {name: meth.info for name, meth in loaded.methods.items()}
        # In place before Ready goes out: the host sends calls as soon as it reads it.
        self.runner.loaded = loaded
        self.control_out.send(m.Ready(seq, loaded.name, methods, sink.lines,
                                      time.perf_counter() - t0))
        return loaded

    def _control_loop(self) -> None:
        runner = self.runner
        assert runner is not None
        while True:
            try:
                msg = self._read_control()
            except Exception:  # noqa: BLE001 - a broken control channel means the host is gone
                os._exit(0)
            if isinstance(msg, m.Release):
                self.endpoint.on_release(msg)
            elif isinstance(msg, m.Credit):
                runner.gates.grant(msg.id, msg.n)
            elif isinstance(msg, m.Cancel):
                runner.cancel(msg.id)
            elif isinstance(msg, m.Describe):
                self._describe(msg.seq)
            elif isinstance(msg, m.Ping):
                self.control_out.send(m.Pong(msg.seq, runner.busy()))
            elif isinstance(msg, m.Reload):
                self._reload(msg)
            elif isinstance(msg, m.Shutdown):
                self._shutdown(msg.grace)

    def _describe(self, seq: int) -> None:
        loaded = self.runner.loaded if self.runner is not None else None
        methods = {name: meth.schema() for name, meth in loaded.methods.items()} \
            if loaded is not None else {}
        self.control_out.send(m.Description(seq, methods))

    def _reload(self, msg: m.Reload) -> None:
        runner = self.runner
        assert runner is not None
        # The host stops sending calls and waits for in-flight ones before it asks to reload.
        runner.wait_idle(None)
        config = msg.config
        if msg.check_config:  # a config that does not fit leaves the old target as it was
            try:
                config = check_config(self.found, config)
            except ConfigProblems as exc:
                self.control_out.send(m.SetupFailed(msg.seq, error_info(exc, kind="config"),
                                                    []))
                return
        old, runner.loaded = runner.loaded, None
        if old is not None:
            try:
                old.teardown()
            except Exception:  # noqa: BLE001 - a failing teardown must not block the reload
                pass
        # Rebuild from what the reference named (a class is instantiated afresh).
        self._setup(msg.seq, lambda: self.found, config)

    def _shutdown(self, grace: float) -> None:
        runner = self.runner
        assert runner is not None
        runner.wait_idle(grace)
        if runner.loaded is not None:
            try:
                runner.loaded.teardown()
            except Exception:  # noqa: BLE001
                pass
        self.capture.drain()
        try:
            self.data_out.flush()
        except OSError:
            pass
        os._exit(0)

    def _frame_handler(self) -> Callable[[memoryview], None]:
        """What to do with each frame read from the data socket (a Call, or a chunk of a
        streamed argument), whichever thread reads it."""
        runner = self.runner
        assert runner is not None
        decode = make_decoder(m.HostData, allow_pickle=self.allow_pickle,
                              importer=self.importer, may_import=True,
                              exporter=self.exporter).decode
        on_call = runner.on_call
        releases, forgotten = self.importer.releases, self.exporter.forgotten
        Call, deliver = m.Call, runner.inputs.deliver
        ep = self.endpoint

        def handle(frame: memoryview) -> None:
            try:
                call = decode(frame)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - an argument this side
                # cannot rebuild (or whose rebuilding, user code, called sys.exit)
                ep.decoded += 1
                self._refuse(frame, exc)
                return
            ep.decoded += 1
            if ep.deferred:  # a Release that waited for this frame (endpoint.py)
                ep.apply_deferred()
            if type(call) is not Call:  # a chunk of a streamed argument (instream.py)
                deliver(call, runner._last_seen)
                return
            if call.release is not None:
                self.shm.apply(call.release)
                call.release = None
            try:
                on_call(call)
            except CallCancelled:
                pass  # armed just as the call ended: it was reported already
            del call
            if releases or forgotten:  # the call's big arguments were just collected
                self.flush_releases()

        return handle

    def _data_loop(self) -> None:
        """The main thread reads the data socket (and runs one slot's sync calls inline)."""
        handle = self._frame_handler()
        read, has_frame, out = self.data_in.read, self.data_in.has_frame, self.data_out
        while True:
            if out.held and not has_frame():
                out.flush()  # the burst is answered: write its replies before blocking
            frame = read()
            if frame is None:
                os._exit(0)
            handle(frame)

    def _data_on_loop(self) -> None:
        """Every method is async: the event loop that runs them reads the data socket too,
        so that a call becomes a task with no hand-off from the main thread (a wake-up of
        each thread per call cost as much as the call). The main thread parks; the loop
        ends the process at the end of the stream, as the main thread would."""
        loop = self.runner.read_on_loop()
        handle = self._frame_handler()
        read, fd = self.data_in.read, self.data.fileno()

        def readable() -> None:
            try:
                while True:
                    frame = read(nowait=True)
                    if frame is NOT_READY:
                        return
                    if frame is None:
                        os._exit(0)
                    handle(frame)
            except BaseException:  # noqa: BLE001 - as an exception out of _data_loop would
                sys.excepthook(*sys.exc_info())
                os._exit(1)

        def watch() -> None:
            loop.add_reader(fd, readable)
            # uvloop (a target may install it) makes the socket non-blocking for every
            # thread: blocking again, other threads' big writes go straight through
            # instead of waiting out EAGAIN in poll (framing.py). Reads here pass
            # MSG_DONTWAIT.
            if not os.get_blocking(fd):
                os.set_blocking(fd, True)
            readable()  # what came before the watch began (read ahead into the buffer)

        loop.call_soon_threadsafe(watch)
        threading.Event().wait()

    def _refuse(self, frame: memoryview, exc: Exception) -> None:
        """Fail a call whose arguments cannot be decoded here (a type the worker cannot
        import, values nested too deeply) instead of dying: its id is read from the
        frame's first bytes."""
        call_id = _call_id(frame)
        if call_id is None:
            chunk_of = _call_id(frame, tag=22)
            if chunk_of is None:  # neither a call nor a chunk: the host is broken
                raise exc
            # A streamed chunk this side cannot rebuild: the call reading it gets the error.
            self.runner.inputs.refuse(chunk_of, TypeError(
                f"cannot decode a chunk of a streamed argument of call {chunk_of} in the "
                f"worker: {exc}"))
            return
        if isinstance(exc, RecursionError):
            exc = ValueError("the arguments are nested too deeply")
        elif isinstance(exc, SystemExit):
            exc = ValueError(f"rebuilding an argument called sys.exit({exc.code!r})")
        error = TypeError(f"cannot decode the arguments of call {call_id} in the worker: {exc}")
        self.data_out.send(m.Failed(call_id, error_info(error)))

    def flush_releases(self) -> None:
        """Send the shared-memory news on its own (when no reply is about to carry it)."""
        self.endpoint.flush_releases()


def _call_id(frame: memoryview, tag: int = 21) -> int | None:
    """The id of a Call frame (msgpack ``[21, id, ...]``; ``tag`` 22: an InChunk) read by
    hand: the frame may be too deep or too strange for any decoder."""
    data = bytes(frame[:16])
    if not data:
        return None
    head = data[0]
    pos = 1 if 0x90 <= head <= 0x9F else 3 if head == 0xDC else 5 if head == 0xDD else None
    if pos is None or len(data) < pos + 2 or data[pos] != tag:
        return None
    kind, pos = data[pos + 1], pos + 2
    if kind <= 0x7F:
        return kind
    size = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(kind)
    if size is None or len(data) < pos + size:
        return None
    return int.from_bytes(data[pos:pos + size], "big")


def _setup_sink() -> Any:
    from .scope import SetupSink

    return SetupSink()


_USAGE = ("usage: python -m corral.worker --control-fd N --data-fd N --fds-fd N --parent-pid N "
          "[--max-frame N] [--die-with-parent] [--keeper-fd N]  (started by corral's host, "
          "not by hand)")


def _parse(argv: list[str]) -> dict[str, Any]:
    # Not argparse: it costs milliseconds of import on every worker start.
    opts: dict[str, Any] = {"max-frame": DEFAULT_MAX_FRAME, "die-with-parent": False,
                            "keeper-fd": None}
    it = iter(argv)
    for arg in it:
        name = arg[2:] if arg.startswith("--") else None
        if name == "die-with-parent":
            opts[name] = True
        elif name in ("control-fd", "data-fd", "fds-fd", "parent-pid", "max-frame",
                      "keeper-fd"):
            try:
                opts[name] = int(next(it))
            except (StopIteration, ValueError):
                raise SystemExit(f"{_USAGE}\n--{name} needs an integer") from None
        else:
            raise SystemExit(f"{_USAGE}\nunknown argument {arg!r}")
    missing = [n for n in ("control-fd", "data-fd", "fds-fd", "parent-pid") if n not in opts]
    if missing:
        raise SystemExit(f"{_USAGE}\nmissing --{', --'.join(missing)}")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = _parse(sys.argv[1:] if argv is None else argv)
    parent = opts["parent-pid"]
    if opts["keeper-fd"] is not None:  # from here on, this is the worker; its parent keeps
        from .keeper import split

        parent = split(opts["keeper-fd"], parent,
                       (opts["control-fd"], opts["data-fd"], opts["fds-fd"]))
    _die_with_parent(parent, opts["die-with-parent"])
    WorkerProcess(opts["control-fd"], opts["data-fd"], opts["fds-fd"], opts["max-frame"]).run()
