"""corral: run model and plugin code in isolated worker processes and call it fast.

The names a target's own code needs (``current``, the exceptions) import eagerly and
cheaply, because this package is also imported inside every worker. Host names (``Worker``)
and shared-memory allocation (``empty``, ``zeros``) load on first use.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._version import __version__
from .exceptions import (
    ArgumentError,
    CorralError,
    InvalidState,
    MethodNotFound,
    ProtocolError,
    RemoteError,
    SetupError,
    WorkerCrashed,
    WorkerError,
    WorkerStartupError,
    WorkerUnavailable,
    CallTimeout,
    QueueFull,
)
from .protocol.messages import Chunk, Done, Log, Metric, MethodInfo, Progress
from .types import File
from .worker.scope import Scope, current

if _TYPE_CHECKING:
    from .host.calls import AsyncCallFuture, AsyncCallStream, CallFuture, CallStream
    from .exceptions import Cancelled
    from .host.supervisor import Crash, Restart
    from .host.pool import AsyncPoolFuture, Pool, PoolFuture, PoolHealth, PoolStats
    from .host.worker import CallOptions, Health, Stats, Worker
    from .remote.client import aconnect, connect
    from .remote.worker import RemoteWorker

_LAZY_NAMES = {
    "empty": "corral.protocol.shm",
    "zeros": "corral.protocol.shm",
    "Worker": "corral.host.worker",
    "CallOptions": "corral.host.worker",
    "Health": "corral.host.worker",
    "Stats": "corral.host.worker",
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
    "Cancelled": "corral.exceptions",
    "connect": "corral.remote.client",
    "aconnect": "corral.remote.client",
    "RemoteWorker": "corral.remote.worker",
}

__all__ = [
    "__version__",
    "current",
    "Scope",
    "File",
    "Log",
    "Progress",
    "Metric",
    "Chunk",
    "Done",
    "MethodInfo",
    "CorralError",
    "InvalidState",
    "MethodNotFound",
    "ArgumentError",
    "RemoteError",
    "WorkerError",
    "WorkerStartupError",
    "SetupError",
    "WorkerCrashed",
    "WorkerUnavailable",
    "ProtocolError",
    "CallTimeout",
    "QueueFull",
    *_LAZY_NAMES,
]


def __getattr__(name: str) -> object:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'corral' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
