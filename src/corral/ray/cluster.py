"""Connecting to a Ray cluster, and a whole cluster on one machine (tests, examples,
benchmarks).

``local_cluster()`` starts a head and worker nodes with ``ray.cluster_utils.Cluster``, with
what such a cluster needs on these machines: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (else
Ray rewrites 127.0.0.1 to the outside address and hangs), token authentication off for a
cluster that only listens on loopback, a fast node health check (node loss seen in about
1.5 s instead of Ray's default tens of seconds), a small object store per node, and its
own temporary folder (session logs included), removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from typing import Any, Iterator

_init_lock = threading.Lock()

#: Node health checks every 500 ms, a node declared dead after 3 missed: node loss in ~1.5 s.
FAST_HEALTH_CHECK = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` if this process is not connected yet
    (None: ``"auto"``: ``RAY_ADDRESS`` or the cluster started on this machine), else to
    the cluster it is connected to."""
    import ray

    with _init_lock:
        if not ray.is_initialized():
            ray.init(address=address or "auto", log_to_driver=False,
                     ignore_reinit_error=True)
    return ray


def _local_env() -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@contextlib.contextmanager
def local_cluster(nodes: list[dict[str, Any]] = ({"num_cpus": 2},),
                  object_store_memory: int = 150 * 2**20,
                  system_config: dict[str, Any] | None = None) -> Iterator[Any]:
    """A Ray cluster on this machine, this process connected as its driver: a head with no
    CPUs (nothing is placed there) and one worker node per item of ``nodes`` (keyword
    arguments of ``Cluster.add_node``: ``num_cpus``, ``num_gpus``, ``resources`` (tags:
    ``resources=corral.ray.tag_resources(["gpu"])``)...). Yields the ``Cluster``; at the
    end, Ray is shut down, every node stopped and the temporary folder removed."""
    _local_env()
    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="corral-ray-")
    address_file, made_dir = _address_file()
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": object_store_memory,
            "include_dashboard": False, "temp_dir": temp,
            "_system_config": {**FAST_HEALTH_CHECK, **(system_config or {})}})
        for spec in nodes:
            cluster.add_node(**{"object_store_memory": object_store_memory, **spec})
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        _forget_address(address_file, cluster, made_dir)


def _address_file() -> tuple[str, bool]:
    """Where ``Cluster`` writes the head's address (Ray's default temp folder, whatever
    ``temp_dir`` says), made if missing: on a fresh machine nothing has made ``/tmp/ray``
    yet and the write fails. True when this made the folder."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # (older Ray)
        from ray._private.utils import get_ray_address_file
    path = get_ray_address_file(None)
    folder = os.path.dirname(path)
    made = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    return path, made


def _forget_address(path: str, cluster: Any, made_dir: bool) -> None:
    """Remove the address file if it still names this cluster, and the folder if this
    made it and nothing else is in it: nothing is left behind."""
    address = getattr(getattr(cluster, "head_node", None), "gcs_address", None)
    try:
        with open(path) as f:
            if address is not None and f.read() == address:
                os.remove(path)
    except OSError:
        pass
    if made_dir:
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:  # (not empty: another Ray on this machine uses it)
            pass
