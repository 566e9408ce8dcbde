"""Every error corral raises, in one place.

::

    CorralError
     ├── InvalidState ............ the Worker is not in a state that allows this (not started, stopped)
     ├── MethodNotFound .......... the target has no such public method        (also an AttributeError)
     ├── ArgumentError ........... the arguments do not fit the method's signature   (also a TypeError)
     ├── RemoteError ............. user code raised during a call; the worker is still usable
     │                             (a builtin type is also catchable as itself: ``except ValueError``)
     ├── Cancelled ............... the call was cancelled (also a concurrent.futures.CancelledError)
     ├── CallTimeout ............. the call ran past its ``timeout`` and was stopped (also a TimeoutError)
     ├── QueueFull ............... a Pool's queue is full
     ├── StreamInputError ........ the iterator given as a streamed argument raised (its ``__cause__``)
     ├── WorkerError ............. the worker process itself is broken, or was stopped
     │    ├── WorkerStartupError . it never became ready: interpreter, handshake or version mismatch
     │    │    └── SetupError .... loading the target or its ``setup()`` raised
     │    ├── WorkerCrashed ...... the process died while calls were in flight (it broke)
     │    ├── WorkerStopped ...... you (``stop()``) or a recycle ended it while calls were in flight
     │    ├── WorkerUnavailable .. it crashed too often and is not restarted any more (also an InvalidState)
     │    └── ProtocolError ...... it sent a frame that is oversize, truncated or undecodable
     │         └── UndecodableValue  one reply held a value the host cannot rebuild: only that call fails
     └── PluginError ............. the plugin layer (``corral.plugins``)
          ├── ManifestError ...... a manifest is missing, unreadable or invalid; every problem listed
          ├── PluginNotFound ..... no plugin of that name (also a KeyError)
          ├── PluginNotLoaded .... known, not loaded (never, unloaded or evicted)
          ├── PluginBusy ......... the operation does not fit the plugin's state
          ├── EnvironmentBuildError  building its environment failed; ``output``
          ├── EnvironmentInUse ... a worker runs in that environment
          ├── ConfigError ........ its config does not fit ``setup()`` (also a ValueError)
          ├── InsufficientResources  not enough free memory / GPU memory
          └── RequirementsError .. a malformed requirement list or file (also a ValueError)

This module is shared by the host and the worker side, so it imports nothing but the stdlib
(``Cancelled`` is built on first use: it needs concurrent.futures, which a worker never does).
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "CorralError",
    "InvalidState",
    "MethodNotFound",
    "ArgumentError",
    "RemoteError",
    "WorkerError",
    "WorkerStartupError",
    "SetupError",
    "WorkerCrashed",
    "WorkerStopped",
    "WorkerUnavailable",
    "ProtocolError",
    "UndecodableValue",
    "Cancelled",
    "CallTimeout",
    "QueueFull",
    "StreamInputError",
    "PluginError",
    "ManifestError",
    "PluginNotFound",
    "PluginNotLoaded",
    "PluginBusy",
    "EnvironmentBuildError",
    "EnvironmentInUse",
    "ConfigError",
    "InsufficientResources",
    "RequirementsError",
]


class CorralError(Exception):
    """Base class of every error raised by corral itself."""


class InvalidState(CorralError):
    """Raised when an operation does not fit the Worker's state, e.g. a call before ``start()``."""


class MethodNotFound(CorralError, AttributeError):
    """Raised when a call names a method the target does not expose."""

    def __init__(self, method: str, available: list[str]):
        self.method = method
        self.available = available
        listed = ", ".join(available) if available else "none"
        super().__init__(f"target has no public method {method!r} (available: {listed})")


def problems_text(problems: list[dict[str, Any]], whole: str = "") -> str:
    """``loc.path: msg; ...`` for a list of ``{"loc": [...], "msg": ...}`` problems (the
    shape of ``ArgumentError.problems`` and ``SetupError.problems``); ``whole`` names a
    problem with an empty ``loc`` (one of the whole input)."""
    return "; ".join(f"{'.'.join(map(str, p.get('loc', ()))) or whole}: {p['msg']}"
                     for p in problems)


class ArgumentError(CorralError, TypeError):
    """Raised when a call's arguments do not fit the method's signature. For a call made
    with ``options(convert=True)``, ``problems`` lists every bad input as
    ``{"loc": [name, ...], "msg": ...}`` (unknown, missing, ill-typed, out of range)."""

    def __init__(self, method: str, signature: str, detail: str,
                 problems: list[dict[str, Any]] | None = None):
        self.method = method
        self.signature = signature
        self.detail = detail
        self.problems = list(problems or [])
        super().__init__(f"bad arguments for {method}{signature}: {detail}")


class RemoteError(CorralError):
    """Raised when user code in the worker raised; the worker stays usable.

    ``type_name`` is the remote exception's qualified type name, ``message`` its text and
    ``remote_traceback`` the full formatted traceback (cause chain included). An explicit
    ``raise ... from`` cause is kept as ``__cause__`` (another RemoteError). The remote
    traceback is also attached as a note, so an uncaught error prints it.

    A builtin exception type comes back as a twin that is also that type, built with the
    remote exception's own arguments where they are plain values (``errno``, ``filename``
    of an OSError, the five of a UnicodeDecodeError); an exception group as a twin of
    ExceptionGroup holding the remote sub-exceptions (``exceptions``). Types that are not
    ``Exception`` subclasses (KeyboardInterrupt, SystemExit, GeneratorExit) come back as
    plain RemoteError: a remote Ctrl-C must not look like a local one.
    """

    type_name: str
    message: str
    remote_traceback: str

    def __init__(self, type_name: str, message: str, remote_traceback: str = ""):
        Exception.__init__(self, _text(type_name, message))
        _describe(self, type_name, message, remote_traceback)

    def __str__(self) -> str:
        return self._text

    def __reduce__(self):
        return (_rebuild_remote_error, (self.type_name, self._message, self.remote_traceback,
                                        self._remote_args, self._sub_errors()))

    def _sub_errors(self) -> tuple:
        return tuple(getattr(self, "exceptions", ()) or ())


def _text(type_name: str, message: str) -> str:
    return f"{type_name}: {message}" if message else type_name


def _describe(err: RemoteError, type_name: str, message: str, remote_traceback: str,
              args: tuple = ()) -> None:
    err.type_name = type_name
    err._message = message
    try:
        err.message = message
    except AttributeError:  # a group's own ``message`` (read-only) is its first argument
        pass
    err.remote_traceback = remote_traceback
    err._text = _text(type_name, message)
    err._remote_args = args
    if remote_traceback:
        err.add_note("Remote traceback (in the worker):\n" + remote_traceback.rstrip())


_twins: dict[type, type] = {}


def _builtin_exception(type_name: str) -> type | None:
    if not type_name.startswith("builtins."):
        return None
    obj = getattr(builtins, type_name[len("builtins.") :], None)
    if obj is BaseExceptionGroup:
        return ExceptionGroup  # its sub-errors are RemoteErrors, so Exceptions
    if isinstance(obj, type) and issubclass(obj, Exception) and obj is not Exception:
        return obj
    return None  # (a remote Exception is a RemoteError, which is one already)


def remote_error_class(type_name: str) -> type[RemoteError]:
    """The class to raise for a remote exception type: RemoteError, or a subclass that is
    also the builtin exception type, so ``except ValueError`` catches a remote ValueError."""
    base = _builtin_exception(type_name)
    if base is None:
        return RemoteError
    twin = _twins.get(base)
    if twin is None:
        # The builtin first in the bases: its C constructor (MemoryError's, OSError's)
        # must build the object. RemoteError's text, pickling and __init__ still win.
        twin = type(f"Remote{base.__name__}", (base, RemoteError), {
            "__module__": __name__, "__init__": RemoteError.__init__,
            "__str__": RemoteError.__str__, "__reduce__": RemoteError.__reduce__,
            "_builtin": base})
        _twins[base] = twin
    return twin


def _rebuild_remote_error(type_name: str, message: str, remote_traceback: str,
                          args: Any = (), exceptions: Any = ()) -> RemoteError:
    """The RemoteError (or builtin twin) for a remote exception; never raises for what a
    worker sent: arguments the builtin refuses are dropped, and a twin that cannot be
    built at all falls back to a plain RemoteError."""
    cls = remote_error_class(type_name)
    args = tuple(args or ())
    exceptions = list(exceptions or ())
    base = getattr(cls, "_builtin", None)
    err = None
    if base is not None:
        if issubclass(base, BaseExceptionGroup):
            # (message, sub-exceptions): a group cannot be built without its members.
            attempts = [(args[0] if args and isinstance(args[0], str) else message,
                         exceptions)] if exceptions else []
        else:
            attempts = [args, ()] if args else [()]
        for attempt in attempts:
            try:
                err = cls.__new__(cls, *attempt)
            except Exception:  # noqa: BLE001 - the worker's arguments do not fit: fewer
                continue
            try:
                base.__init__(err, *attempt)
            except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError without its 5
                if attempt:
                    err = None
                    continue
            args = attempt
            break
    if err is None:
        err = RemoteError.__new__(RemoteError)
        if exceptions:
            err.exceptions = tuple(exceptions)
        if not type_name.startswith("builtins."):
            args = ()  # (a user type's arguments are only sent for builtins anyway)
        if args:  # builtins.Exception, SystemExit...: their own arguments
            Exception.__init__(err, *args)
    if not args:
        Exception.__init__(err, _text(type_name, message))
    _describe(err, type_name, message, remote_traceback, args)
    return err


def make_remote_error(info: Any) -> RemoteError:
    """Build the exception for a remote error description (``protocol.messages.ErrorInfo``),
    following its ``cause`` chain and a group's sub-exceptions."""
    subs = [make_remote_error(sub) for sub in (getattr(info, "exceptions", None) or ())]
    err = _rebuild_remote_error(info.type, info.message, info.traceback,
                                getattr(info, "args", None) or (), subs)
    if info.cause is not None:
        err.__cause__ = make_remote_error(info.cause)
    elif info.context is not None:
        err.__context__ = make_remote_error(info.context)
    return err


class WorkerError(CorralError):
    """Base class for a worker process that is broken; ``pid`` names it when known."""

    pid: int | None = None


class WorkerStartupError(WorkerError):
    """Raised when a worker does not become ready: the interpreter could not start it,
    the handshake failed or its protocol version does not match the host's.
    ``stderr`` holds the last lines the process wrote."""

    def __init__(self, message: str, stderr: str = ""):
        self.stderr = stderr
        if stderr:
            message = f"{message}\n--- worker stderr (last lines) ---\n{stderr.rstrip()}"
        super().__init__(message)


class SetupError(WorkerStartupError):
    """Raised when loading the target or running its ``setup()`` raised.

    ``logs`` holds what setup wrote (stdout and stderr lines), ``remote_traceback`` the
    formatted traceback and ``error_type`` the remote exception's qualified type name.
    With ``Worker(check_config=True)``, a config that does not fit ``setup()`` fails before
    anything is built, and ``problems`` lists every problem (``{"loc": [...], "msg": ...}``).
    """

    def __init__(self, message: str, *, error_type: str = "", remote_traceback: str = "",
                 logs: list[str] | None = None,
                 problems: list[dict[str, Any]] | None = None):
        self.error_type = error_type
        self.remote_traceback = remote_traceback
        self.logs = list(logs or [])
        self.problems = list(problems or [])
        super().__init__(message)
        if remote_traceback:
            self.add_note("Remote traceback (in the worker):\n" + remote_traceback.rstrip())
        if self.logs:
            self.add_note("Setup logs:\n" + "\n".join(self.logs))


class WorkerCrashed(WorkerError):
    """Raised for calls in flight when the worker process dies.

    ``exitcode`` is the process's exit code (negative: killed by that signal),
    ``signal_name`` e.g. ``"SIGKILL"``, and ``stderr`` its last stderr lines.
    """

    def __init__(self, message: str, *, pid: int | None = None, exitcode: int | None = None,
                 signal_name: str | None = None, stderr: str = ""):
        self.pid = pid
        self.exitcode = exitcode
        self.signal_name = signal_name
        self.stderr = stderr
        if stderr:
            message = f"{message}\n--- worker stderr (last lines) ---\n{stderr.rstrip()}"
        super().__init__(message)


class WorkerStopped(WorkerError):
    """Raised for calls cut off because the worker's process was ended on purpose: your own
    ``stop()`` (past its grace), or the process being replaced. Not a crash: a Pool never
    retries it, and it does not count against the restart policy."""

    def __init__(self, message: str, *, pid: int | None = None):
        self.pid = pid
        super().__init__(message)


class ProtocolError(WorkerError):
    """Raised when a worker sends an oversize, truncated or undecodable frame, or a message
    that breaks the protocol. The worker is then defunct: it is killed and its calls fail."""


class UndecodableValue(ProtocolError):
    """Raised for one call whose reply (its result, a chunk, a metric) holds a value the
    host cannot rebuild: an Enum, dataclass or Struct whose module the host has not
    imported (it never imports one because a worker named it), or whose type does not fit
    what was sent. Only that call fails; the worker stays usable. ``type_name`` names the
    type and ``where`` where it sat (``result['items'][2]``)."""

    def __init__(self, message: str, *, type_name: str = "", where: str = ""):
        self.type_name = type_name
        self.where = where
        super().__init__(message)


class WorkerUnavailable(WorkerError, InvalidState):
    """Raised for calls to a worker that crashed more often than its restart policy allows
    (``Restart.max_restarts`` within ``Restart.window`` seconds), or whose restart failed
    for good. ``history`` lists the crashes (``corral.Crash``), oldest first."""

    def __init__(self, message: str, history: list[Any] | None = None):
        self.history = list(history or [])
        if self.history:
            lines = "\n".join(f"  {c}" for c in self.history)
            message = f"{message}\ncrash history (oldest first):\n{lines}"
        super().__init__(message)


class CallTimeout(CorralError, TimeoutError):
    """Raised when a call runs past its ``timeout``: the call was cancelled in the worker
    (the same way as ``cancel()``), so its slot is free again once the work has stopped."""

    def __init__(self, message: str, timeout: float | None = None):
        self.timeout = timeout
        super().__init__(message)


class QueueFull(CorralError):
    """Raised when a call would wait in a queue that is already full (``Pool(max_queue=)``)."""


class StreamInputError(CorralError):
    """Raised for a call whose streamed argument (an iterator, generator or async iterator
    given as an argument) raised while producing its chunks: the call was cancelled in the
    worker. The producer's exception is the ``__cause__``; ``argument`` says which one
    (``args[0]``, ``kwargs['audio']``) and ``chunks`` how many chunks it had produced."""

    def __init__(self, message: str, argument: str = "", chunks: int = 0):
        self.argument = argument
        self.chunks = chunks
        super().__init__(message)


class PluginError(CorralError):
    """Base class of the plugin layer's errors."""


class ManifestError(PluginError):
    """A plugin's manifest is missing, unreadable or invalid; ``source`` names the file and
    ``problems`` lists every problem found (``{"loc": [...], "msg": ...}``)."""

    def __init__(self, source: str, problems: list[dict[str, Any]]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid plugin manifest {source}: "
                         f"{problems_text(problems, '(manifest)')}")


class PluginNotFound(PluginError, KeyError):
    """No plugin of that name is known."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "plugin not found"


class PluginNotLoaded(PluginError):
    """The plugin is known but not loaded (never loaded, unloaded, or evicted to make room
    for another: the message says which)."""


class PluginBusy(PluginError):
    """The operation does not fit the plugin's state: uninstalling a loaded plugin, loading
    one already loaded with another config. The message says what to do instead."""


class EnvironmentBuildError(PluginError):
    """Building a plugin's environment failed; ``output`` holds the installer's own message.
    Nothing half-built is left in the cache."""

    def __init__(self, message: str, output: str = ""):
        self.output = output
        super().__init__(message + (f"\n{output.rstrip()}" if output else ""))


class EnvironmentInUse(PluginError):
    """An environment cannot be removed: a worker runs in it (held with
    ``EnvironmentCache.hold()``, by this process or another)."""


class ConfigError(PluginError, ValueError):
    """A plugin's config does not fit its ``setup()``: ``problems`` lists every unknown key,
    wrong type and missing required value (``{"loc": [...], "msg": ...}``). Nothing was
    started."""

    def __init__(self, plugin: str, problems: list[dict[str, Any]]):
        self.plugin = plugin
        self.problems = problems
        super().__init__(f"bad config for plugin {plugin!r}: "
                         f"{problems_text(problems, '(config)')}")


class InsufficientResources(PluginError):
    """Loading a plugin would need more memory or GPU memory than is free, counting what the
    loaded plugins hold. ``needed`` and ``free`` are in bytes per resource."""

    def __init__(self, message: str, needed: dict[str, int] | None = None,
                 free: dict[str, int] | None = None):
        self.needed = dict(needed or {})
        self.free = dict(free or {})
        super().__init__(message)


class RequirementsError(PluginError, ValueError):
    """A requirement list or requirements file is malformed: a line that is neither a
    requirement, a path/URL nor a known option, a missing or circular ``-r`` include.
    ``source`` names the file (or ``"<requirements>"`` for an inline list) and ``line`` the
    1-based line number where known."""

    def __init__(self, source: str, message: str, line: int | None = None):
        self.source = source
        self.line = line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def _make_cancelled() -> type:
    import concurrent.futures

    class Cancelled(CorralError, concurrent.futures.CancelledError):
        """Raised for a call that was cancelled: ``future.cancel()``, closing its stream, a
        cancelled asyncio task, or the host stopping. The work in the worker was stopped
        (or its worker killed, when it did not stop within ``cancel_grace``)."""

    Cancelled.__module__ = __name__
    return Cancelled


def __getattr__(name: str) -> Any:
    if name == "Cancelled":
        cls = globals()["Cancelled"] = _make_cancelled()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
