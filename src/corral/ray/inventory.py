"""``nodes()``: the cluster's nodes, what each can do and how loaded it is.

Capabilities come from Ray (each node's resources: CPUs, memory, GPUs, custom resources and
the tags among them) and from a probe task run on each node (``num_cpus=0``, pinned there):
its host name, Python version, the environments in corral's cache there, GPUs with their
memory (``nvidia-smi``, where there is one), and its live load (load average, memory in
use, GPU use). Active calls and queue depth are those of this process's Ray workers on the
node, as corral counts them (the calls they have in flight beyond their slots are queued
on the node's Worker).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import weakref
from typing import Any

import msgspec

from .placement import TAG_PREFIX

#: The live RayWorkers of this process (for their calls per node).
_workers: "weakref.WeakSet[Any]" = weakref.WeakSet()


class GPU(msgspec.Struct):
    """One GPU of a node: ``memory`` and ``memory_used`` in bytes, ``utilization`` 0..100."""

    index: int
    name: str
    memory: int
    memory_used: int | None = None
    utilization: float | None = None


class NodeInfo(msgspec.Struct, kw_only=True):
    """One node of the cluster. ``cpus``, ``memory`` (bytes) and ``gpus`` are Ray's
    totals, ``*_free`` what Ray has not handed out; ``tags`` the corral tags it offers and
    ``resources`` its other custom resources; ``python``, ``environments`` (the keys of
    corral's environment cache there) and ``gpu_devices`` come from the probe, with the
    live ``load`` (1-minute load average), ``memory_used`` and ``cpu_count``. ``workers``,
    ``active_calls`` and ``queued`` count this process's Ray workers there. ``probe_error``
    says why a node did not answer the probe (its other fields are then Ray's only)."""

    node_id: str
    address: str
    alive: bool
    cpus: float = 0.0
    cpus_free: float = 0.0
    memory: int = 0
    memory_free: int = 0
    gpus: float = 0.0
    gpus_free: float = 0.0
    tags: list[str] = []
    resources: dict[str, float] = {}
    hostname: str | None = None
    python: str | None = None
    environments: list[str] = []
    gpu_devices: list[GPU] = []
    cpu_count: int | None = None
    load: float | None = None
    memory_used: int | None = None
    workers: int = 0
    active_calls: int = 0
    queued: int = 0
    probe_error: str | None = None


def probe() -> dict[str, Any]:
    """What a node tells about itself (runs there, as a Ray task)."""
    info: dict[str, Any] = {"hostname": socket.gethostname(),
                            "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
                            "load": os.getloadavg()[0]}
    try:
        with open("/proc/meminfo") as f:
            mem = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        info["memory_used"] = mem["MemTotal"] - mem.get("MemAvailable", mem["MemFree"])
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        from ..plugins.envs import default_root

        root = default_root()
        info["environments"] = sorted(p.name for p in root.iterdir()
                                      if (p / "corral-env.json").exists())
    except OSError:
        info["environments"] = []
    info["gpu_devices"] = _gpus()
    return info


def _gpus() -> list[dict[str, Any]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,memory.used,"
                              "utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:
            gpus.append({"index": int(parts[0]), "name": parts[1],
                         "memory": int(float(parts[2])) * 2**20,
                         "memory_used": int(float(parts[3])) * 2**20,
                         "utilization": float(parts[4])})
        except ValueError:
            continue
    return gpus


def nodes(address: str | None = None, probe_timeout: float = 10.0) -> list[NodeInfo]:
    """Every node of the cluster at ``address`` (see ``corral.ray.connect``), dead ones
    included (``alive`` False), the live ones probed (within ``probe_timeout`` seconds)."""
    from .cluster import connect

    ray = connect(address)
    from ray._private import state as ray_state
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        free = ray_state.state.available_resources_per_node()
    except Exception:  # noqa: BLE001 - an internal API: without it, no free figures
        free = {}
    task = ray.remote(num_cpus=0, max_retries=0)(probe)
    found, refs = [], {}
    for n in ray.nodes():
        node_id, total = n["NodeID"], n.get("Resources", {})
        avail = free.get(node_id, {})
        info = NodeInfo(
            node_id=node_id, address=n.get("NodeManagerAddress", ""), alive=bool(n["Alive"]),
            cpus=total.get("CPU", 0.0), cpus_free=avail.get("CPU", 0.0),
            memory=int(total.get("memory", 0)), memory_free=int(avail.get("memory", 0)),
            gpus=total.get("GPU", 0.0), gpus_free=avail.get("GPU", 0.0),
            tags=sorted(k[len(TAG_PREFIX):] for k in total if k.startswith(TAG_PREFIX)),
            resources={k: v for k, v in _custom(total).items()
                       if not k.startswith(TAG_PREFIX)})
        found.append(info)
        if info.alive:
            refs[node_id] = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id, soft=False)).remote()
    for info in found:
        ref = refs.get(info.node_id)
        if ref is None:
            continue
        try:
            got = ray.get(ref, timeout=probe_timeout)
        except Exception as exc:  # noqa: BLE001 - that node's answer is its failure
            info.probe_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            ray.cancel(ref, force=True)
            continue
        info.hostname = got.get("hostname")
        info.python = got.get("python")
        info.cpu_count = got.get("cpu_count")
        info.load = got.get("load")
        info.memory_used = got.get("memory_used")
        info.environments = got.get("environments", [])
        info.gpu_devices = [msgspec.convert(g, GPU) for g in got.get("gpu_devices", [])]
    by_node = {info.node_id: info for info in found}
    for worker in list(_workers):
        info = by_node.get(worker.node_id or "")
        if info is None or worker.state != "ready":
            continue
        info.workers += 1
        usage = worker.usage()
        info.active_calls += usage.busy
        info.queued += usage.queued
    return found


def _custom(total: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in total.items()
            if k not in ("CPU", "GPU", "memory", "object_store_memory")
            and not k.startswith("node:") and not k.startswith("accelerator_type:")}
