"""corral: run model and plugin code in isolated worker processes and call it fast.

The names a target's own code needs (``current``, the exceptions) import eagerly and
cheaply, because this package is also imported inside every worker. Host names (``Worker``,
``Pool``, ``PluginManager``) and shared-memory allocation (``empty``, ``zeros``) load on
first use. ``__all__`` holds what users need; the wire messages (``Log``, ``Chunk``...),
the future types and the report Structs stay reachable here and in their modules.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from . import _workerstart

if _workerstart.in_worker():
    _workerstart.import_msgspec()

from ._version import __version__
from .exceptions import (
    ArgumentError,
    CallTimeout,
    ConfigError,
    CorralError,
    EnvironmentBuildError,
    EnvironmentInUse,
    InsufficientResources,
    InvalidState,
    ManifestError,
    MethodNotFound,
    PluginBusy,
    PluginError,
    PluginNotFound,
    PluginNotLoaded,
    ProtocolError,
    QueueFull,
    RemoteError,
    RequirementsError,
    SetupError,
    StreamInputError,
    UndecodableValue,
    WorkerCrashed,
    WorkerError,
    WorkerStartupError,
    WorkerStopped,
    WorkerUnavailable,
)
from .protocol.messages import Chunk, Done, Log, MethodInfo, Metric, Progress
from .types import File
from .worker.scope import Scope, current

if _TYPE_CHECKING:
    from .exceptions import Cancelled
    from .host.caller import CallOptions, Runner
    from .host.calls import AsyncCallFuture, AsyncCallStream, CallFuture, CallStream
    from .host.pool import AsyncPoolFuture, Pool, PoolFuture, PoolHealth, PoolStats
    from .host.supervisor import Crash, Restart
    from .host.worker import Health, Stats, Worker
    from .pipeline import Pipeline
    from .plugins.manager import PluginManager
    from .protocol.shm import empty, zeros
    from .remote.client import aconnect, connect
    from .remote.worker import RemoteWorker

_LAZY_NAMES = {
    "empty": "corral.protocol.shm",
    "zeros": "corral.protocol.shm",
    "Worker": "corral.host.worker",
    "Health": "corral.host.worker",
    "Stats": "corral.host.worker",
    "Runner": "corral.host.caller",
    "CallOptions": "corral.host.caller",
    "CallFuture": "corral.host.calls",
    "CallStream": "corral.host.calls",
    "AsyncCallFuture": "corral.host.calls",
    "AsyncCallStream": "corral.host.calls",
    "Pool": "corral.host.pool",
    "PoolFuture": "corral.host.pool",
    "AsyncPoolFuture": "corral.host.pool",
    "PoolHealth": "corral.host.pool",
    "PoolStats": "corral.host.pool",
    "Restart": "corral.host.supervisor",
    "Crash": "corral.host.supervisor",
    "PluginManager": "corral.plugins.manager",
    "Cancelled": "corral.exceptions",
    "Input": "corral.cog.fields",
    "connect": "corral.remote.client",
    "aconnect": "corral.remote.client",
    "RemoteWorker": "corral.remote.worker",
    "Pipeline": "corral.pipeline",
}

__all__ = [
    "__version__",
    # run code in workers
    "Worker",
    "Pool",
    "PluginManager",
    "Runner",
    "Restart",
    "Pipeline",
    # inside a target
    "current",
    "File",
    "empty",
    "zeros",
    # errors (the tree: corral.exceptions)
    "CorralError",
    "InvalidState",
    "MethodNotFound",
    "ArgumentError",
    "RemoteError",
    "Cancelled",
    "CallTimeout",
    "QueueFull",
    "StreamInputError",
    "WorkerError",
    "WorkerStartupError",
    "SetupError",
    "WorkerCrashed",
    "WorkerStopped",
    "WorkerUnavailable",
    "ProtocolError",
    "UndecodableValue",
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

# Reachable as corral.X, not in __all__ (see the module docstring).
_REACHABLE = ("Scope", "Log", "Progress", "Metric", "Chunk", "Done", "MethodInfo")


def __getattr__(name: str) -> object:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
