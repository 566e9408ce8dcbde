"""The errors of Ray workers, in corral's tree (corral/exceptions.py)::

    CorralError
     └── WorkerError
          ├── WorkerCrashed
          │    └── NodeLost ........ the Ray actor hosting the worker, or its whole node, died
          └── WorkerUnavailable
               └── NoNodeFits ...... no node of the cluster has (or frees) what the worker asks for

A crash of the model process itself is a plain ``WorkerCrashed``, as locally: corral's
supervisor on that node restarts it.
"""

from __future__ import annotations

from ..exceptions import WorkerCrashed, WorkerUnavailable

__all__ = ["NodeLost", "NoNodeFits"]


class NodeLost(WorkerCrashed):
    """Raised for the calls in flight on a Ray worker whose actor or node died. ``node_id``
    and ``node_ip`` name the node; the worker is replaced on a node that fits (a Pool
    retries idempotent calls elsewhere meanwhile)."""

    def __init__(self, message: str, *, node_id: str | None = None,
                 node_ip: str | None = None, pid: int | None = None):
        self.node_id = node_id
        self.node_ip = node_ip
        super().__init__(message, pid=pid)


class NoNodeFits(WorkerUnavailable):
    """Raised when no node of the cluster can host a Ray worker: none has the resources
    or tags it asks for, or none freed them within ``place_timeout``. ``wanted`` is what
    it asked for (Ray resource names to amounts)."""

    def __init__(self, message: str, wanted: dict | None = None):
        self.wanted = dict(wanted or {})
        super().__init__(message)
