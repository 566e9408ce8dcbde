"""Launch one worker process: spawn it and take it through the handshake to Ready.

::

    WorkerProcess (spawn, sockets) ─► Connection ─► Hello? versions fit? ─► Init ─► Ready
                                                                   └─► SetupFailed: SetupError

``launch()`` is a function, not a method: a first start, a restart and a recycle all call
it the same way, and whatever fails on the way kills and releases the process before the
error is raised.
"""

from __future__ import annotations

import inspect
import socket
import sys
import time
from typing import Any, Callable

import msgspec

from ..exceptions import InvalidState, ProtocolError, SetupError, WorkerStartupError
from ..protocol import messages as m
from ..protocol.framing import TruncatedFrame
from ..protocol.version import check_hello
from .connection import Connection
from .process import WorkerProcess, describe_exit

#: Seconds a new worker process has to say Hello (interpreter start and imports).
HELLO_TIMEOUT = 30.0


class LaunchSpec(msgspec.Struct, frozen=True):
    """What a process is launched with (a Worker's settings that reach its processes)."""

    python: str | None
    env: dict[str, str]
    cwd: str | None
    max_frame: int
    slots: int
    prefetch: int
    allow_pickle: bool
    oob_threshold: int
    cancel_grace: float
    start_timeout: float | None
    check_config: bool | str


class Launched(msgspec.Struct):
    """A process that is Ready, its connection (not started yet) and what it said."""

    proc: Any
    conn: Any
    ready: Any
    start_time: float


def launch(spec: LaunchSpec, target: m.TargetSpec, config: dict[str, Any], target_name: str,
           *, on_broken: Callable, make_error: Callable, on_overdue: Callable,
           on_settled: Callable, on_spawned: Callable[[Any], None] = lambda proc: None,
           on_setup_logs: Callable[[list[str]], None] = lambda logs: None,
           spawn: Callable[[], Any] | None = None) -> Launched:
    """Start a process and take it through the handshake to Ready; on failure, kill and
    release it and raise why (WorkerStartupError, SetupError, ProtocolError).

    ``on_broken(proc, error)``, ``on_overdue(proc, call_id)``: bound to this process;
    ``on_spawned(proc)`` is told the process as soon as it exists (so that a stop() can
    kill a launch under way); ``on_setup_logs`` gets the setup logs of a failed setup.
    ``spawn()``, when given, starts the process instead of a new WorkerProcess (PIE's warm
    workers fork it from a zygote); it returns an object with WorkerProcess's interface."""
    t0 = time.monotonic()
    try:
        proc = (spawn() if spawn is not None
                else WorkerProcess(spec.python, spec.env, spec.max_frame, spec.cwd))
    except OSError as exc:
        raise WorkerStartupError(
            f"cannot start a worker with {spec.python or sys.executable!r}: {exc}") from exc
    on_spawned(proc)
    conn = None
    try:
        conn = Connection(
            proc.control, proc.data, proc.fds, window=spec.slots + spec.prefetch,
            allow_pickle=spec.allow_pickle, oob_threshold=spec.oob_threshold,
            max_frame=spec.max_frame, on_worker_log=proc.note_output,
            on_broken=lambda error: on_broken(proc, error),
            make_error=make_error, cancel_grace=spec.cancel_grace,
            on_overdue=lambda call_id: on_overdue(proc, call_id),
            on_settled=on_settled)
        ready = _handshake(spec, target, config, target_name, proc, conn, on_setup_logs)
    except BaseException:
        proc.kill()
        if conn is not None:
            conn.close(InvalidState("the worker failed to start"))
        proc.close()
        raise
    return Launched(proc, conn, ready, time.monotonic() - t0)


def _handshake(spec: LaunchSpec, target: m.TargetSpec, config: dict[str, Any],
               target_name: str, proc: WorkerProcess, conn: Connection,
               on_setup_logs: Callable[[list[str]], None]) -> m.Ready:
    proc.control.settimeout(HELLO_TIMEOUT)
    hello = _read_startup(spec, proc, conn, "its hello")
    if not isinstance(hello, m.Hello):
        raise ProtocolError(f"worker {proc.pid} sent {type(hello).__name__} before Hello")
    problem = check_hello(hello.protocol, hello.corral_version)
    if problem:
        raise WorkerStartupError(f"worker {proc.pid} ({spec.python or sys.executable}): "
                                 f"{problem}")
    proc.control.settimeout(spec.start_timeout)
    conn.send_control(m.Init(target, config, spec.slots, spec.allow_pickle,
                             spec.oob_threshold, bool(spec.check_config),
                             spec.check_config == "only"))
    while True:
        msg = _read_startup(spec, proc, conn, "Ready")
        if isinstance(msg, m.WorkerLog):
            proc.note_output(msg.stream, msg.text)
            continue
        break
    if isinstance(msg, m.SetupFailed):
        on_setup_logs(msg.setup_logs)
        raise setup_error(target_name, msg)
    if not isinstance(msg, m.Ready):
        raise ProtocolError(f"worker {proc.pid} sent {type(msg).__name__} instead of Ready")
    proc.control.settimeout(None)
    return msg


def _read_startup(spec: LaunchSpec, proc: WorkerProcess, conn: Connection, what: str) -> Any:
    try:
        msg = conn.read_control()
    except socket.timeout:
        raise WorkerStartupError(f"worker {proc.pid} did not send {what} in time",
                                 proc.stderr_tail(0)) from None
    except (OSError, TruncatedFrame):
        msg = None  # it died (or hung up) while we waited: reported below with its exit
    except Exception as exc:  # noqa: BLE001 - anything else it sent is garbage
        raise ProtocolError(f"worker {proc.pid} sent an undecodable message during "
                            f"startup: {exc}") from exc
    if msg is None:
        code = proc.wait(5.0)
        text, _ = describe_exit(code)
        raise WorkerStartupError(
            f"worker {proc.pid} ended before sending {what} ({text}); is corral importable "
            f"by {spec.python or sys.executable!r}?", proc.stderr_tail())
    return msg


def setup_error(target: str, msg: m.SetupFailed) -> SetupError:
    info = msg.error
    if info.kind == "config":  # the traceback of a check is noise: the problems say it all
        return SetupError(f"the config of {target} does not fit its setup(): {info.message}",
                          error_type=info.type, logs=msg.setup_logs,
                          problems=info.problems)
    return SetupError(f"setting up {target} failed: {info.type}: {info.message}",
                      error_type=info.type, remote_traceback=info.traceback,
                      logs=msg.setup_logs)


def target_spec(target: Any) -> m.TargetSpec:
    """The wire form of a target: its reference, or the object cloudpickled."""
    if isinstance(target, str):
        return m.TargetSpec(ref=target)
    return m.TargetSpec(pickled=_pickle_target(target))


def describe_target(obj: Any) -> str:
    if isinstance(obj, type) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def _pickle_target(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "shipping a local class, instance or function to a worker needs cloudpickle: "
            "pip install 'corral[pickle]' (or pass a reference like 'module:Name')") from None
    module = sys.modules.get(getattr(obj, "__module__", None) or type(obj).__module__)
    # The target's own module goes by value: the worker may not be able to import it (a
    # test file, a notebook). Its imports (numpy, torch...) still go by reference.
    by_value = module is not None and module.__name__ not in ("__main__", "builtins") \
        and not module.__name__.startswith("corral")
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise TypeError(f"cannot ship target {describe_target(obj)} to a worker: {exc}") from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
