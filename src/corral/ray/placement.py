"""Where a Ray worker goes: ``corral.ray.on(...)``, the resources and tags it needs, and
whether any node of the cluster can ever give them.

Tags are node capabilities named by the user (``"gpu"``, ``"training"``). A node offers a
tag as a Ray custom resource, ``corral-tag:<name>``, set when it joins
(``ray start --resources='{"corral-tag:gpu": 10000}'``, or ``tag_resources(["gpu"])``);
a worker that requires the tag takes one unit of it, so a node with the tag takes up to
``TAG_CAPACITY`` such workers and a node without it takes none: placement by tag is
Ray's own resource check, exact.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

#: The Ray custom resource that stands for a tag.
TAG_PREFIX = "corral-tag:"
#: Units of each tag a node offers (a worker takes one).
TAG_CAPACITY = 10000

__all__ = ["RayPlacement", "on", "tag_resources", "TAG_PREFIX", "TAG_CAPACITY"]


def tag_resources(tags: Iterable[str]) -> dict[str, float]:
    """The custom resources a node joins with to offer ``tags``:
    ``{"corral-tag:gpu": 10000, ...}`` (for ``ray start --resources`` or
    ``Cluster.add_node(resources=...)``)."""
    return {TAG_PREFIX + _check_tag(t): TAG_CAPACITY for t in tags}


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag or any(ch.isspace() for ch in tag) \
            or tag.startswith(TAG_PREFIX):
        raise ValueError(f"a tag is a non-empty str without spaces, not {tag!r}")
    return tag


def _check_amount(name: str, value: Any, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    return value


class RayPlacement:
    """Ray workers, placed by Ray: what ``corral.ray.on(...)`` returns. Pass it as a Pool's
    ``runner`` (``Pool(target, workers=4, runner=corral.ray.on(...))``), or call it like
    ``Worker``: ``corral.ray.on(...)(target, slots=2)`` makes one ``RayWorker``.

    ``address`` is the cluster's (``"auto"``, ``"ray://head:10001"``, ``"127.0.0.1:6379"``;
    None: the one this process is connected to, else ``"auto"``). Each worker's actor
    asks Ray for ``num_cpus``, ``num_gpus``, ``memory`` (bytes), the custom ``resources``
    and one unit of each tag in ``tags``. ``place_timeout`` bounds the wait for a node to
    free room (NoNodeFits after it; at once when no node could ever fit).
    ``runtime_env`` is handed to Ray as it is (prefer corral's environments on nodes:
    ``requirements=`` on the worker). ``strategy="SPREAD"`` asks Ray to put a pool's
    workers on different nodes where it can (one node's loss then costs one worker)."""

    __slots__ = ("address", "num_cpus", "num_gpus", "memory", "resources", "tags",
                 "place_timeout", "runtime_env", "namespace", "strategy")

    def __init__(self, address: str | None = None, *, num_cpus: float = 1,
                 num_gpus: float = 0, memory: int | None = None,
                 resources: dict[str, float] | None = None, tags: Iterable[str] = (),
                 place_timeout: float = 60.0, runtime_env: dict | None = None,
                 namespace: str | None = None, strategy: str | None = None):
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a str or None, not {type(address).__name__}")
        self.address = address
        self.num_cpus = _check_amount("num_cpus", num_cpus)
        self.num_gpus = _check_amount("num_gpus", num_gpus)
        if memory is not None:
            _check_amount("memory", memory, allow_zero=False)
        self.memory = memory
        if resources is not None and not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, not {type(resources).__name__}")
        checked = {}
        for name, amount in (resources or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a resource name is a non-empty str, not {name!r}")
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"resources[{name!r}]: use num_cpus, num_gpus or memory")
            checked[name] = _check_amount(f"resources[{name!r}]", amount, allow_zero=False)
        self.resources = checked
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not one str")
        self.tags = tuple(_check_tag(t) for t in tags)
        _check_amount("place_timeout", place_timeout, allow_zero=False)
        self.place_timeout = float(place_timeout)
        self.runtime_env = runtime_env
        self.namespace = namespace
        if strategy not in (None, "DEFAULT", "SPREAD"):
            raise ValueError(f"strategy must be None, 'DEFAULT' or 'SPREAD', not {strategy!r}")
        self.strategy = strategy

    def wanted(self) -> dict[str, float]:
        """What one worker asks Ray for, by Ray resource name."""
        want: dict[str, float] = {}
        if self.num_cpus:
            want["CPU"] = self.num_cpus
        if self.num_gpus:
            want["GPU"] = self.num_gpus
        if self.memory:
            want["memory"] = self.memory
        want.update(self.resources)
        for tag in self.tags:
            want[TAG_PREFIX + tag] = 1
        return want

    def actor_options(self) -> dict[str, Any]:
        """The placement part of ``ActorClass.options(...)``."""
        custom = dict(self.resources)
        for tag in self.tags:
            custom[TAG_PREFIX + tag] = 1
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                "resources": custom}
        if self.memory:
            opts["memory"] = self.memory
        if self.runtime_env is not None:
            opts["runtime_env"] = self.runtime_env
        if self.namespace is not None:
            opts["namespace"] = self.namespace
        if self.strategy is not None:
            opts["scheduling_strategy"] = self.strategy
        return opts

    def __call__(self, target: Any, **worker_kwargs: Any) -> Any:
        """One ``RayWorker`` of ``target`` placed this way (the Pool's ``runner`` hook)."""
        from .worker import RayWorker

        return RayWorker(target, placement=self, **worker_kwargs)

    def __repr__(self) -> str:
        want = ", ".join(f"{k}={v:g}" for k, v in self.wanted().items())
        return f"corral.ray.on({self.address!r}, {want})"


def on(address: str | None = None, **placement: Any) -> RayPlacement:
    """Ray workers on the cluster at ``address``, with these resources and tags (see
    ``RayPlacement``): ``Pool(target, workers=4, runner=corral.ray.on("auto",
    num_gpus=1, tags=["gpu"]))``."""
    return RayPlacement(address, **placement)


def node_fits(wanted: dict[str, float], total: dict[str, float]) -> bool:
    """A node whose resources are ``total`` could host a worker that wants ``wanted``."""
    return all(total.get(name, 0) + 1e-9 >= amount for name, amount in wanted.items())


def explain_no_fit(wanted: dict[str, float], nodes: list[dict[str, Any]]) -> str:
    """Why no node of ``nodes`` (``ray.nodes()`` records, alive ones) fits ``wanted``:
    per node, what it lacks."""
    if not nodes:
        return "the cluster has no live node"
    parts = []
    for node in nodes:
        total = node.get("Resources", {})
        lacks = []
        for name, amount in wanted.items():
            has = total.get(name, 0)
            if has + 1e-9 < amount:
                what = f"tag {name[len(TAG_PREFIX):]!r}" if name.startswith(TAG_PREFIX) \
                    else f"{name} {amount:g} (has {has:g})"
                lacks.append(what)
        ident = f"{node.get('NodeManagerAddress', '?')} {str(node.get('NodeID', ''))[:8]}"
        parts.append(f"{ident} lacks {', '.join(lacks)}")
    return "; ".join(parts)
