"""Ray workers: the same Pool on a Ray cluster, placed by resources and tags.

::

    import corral, corral.ray

    with corral.Pool("mypkg.model:Model", workers=4, slots=2,
                     runner=corral.ray.on("auto", num_gpus=1, tags=["gpu"])) as pool:
        pool.predict(x)

``on(...)`` says where (the cluster's address, ``num_cpus``, ``num_gpus``, ``memory``,
custom ``resources``, ``tags``); each worker is a ``RayWorker``: a Ray actor hosting a local
corral Worker on its node (see docs/ray.md). ``nodes()`` lists the cluster's nodes with
their capabilities and load; ``local_cluster()`` runs a whole cluster on this machine.
Importing this package does not import Ray; using it does (the ``ray`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

from .errors import NodeLost, NoNodeFits
from .placement import TAG_CAPACITY, TAG_PREFIX, RayPlacement, on, tag_resources

if _TYPE_CHECKING:
    from .cluster import connect, local_cluster
    from .inventory import NodeInfo, nodes
    from .worker import RayWorker

__all__ = ["on", "RayPlacement", "RayWorker", "NodeLost", "NoNodeFits", "nodes", "NodeInfo",
           "tag_resources", "local_cluster", "connect", "TAG_PREFIX", "TAG_CAPACITY"]

_LAZY = {"RayWorker": ".worker", "nodes": ".inventory", "NodeInfo": ".inventory",
         "local_cluster": ".cluster", "connect": ".cluster"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.ray' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
