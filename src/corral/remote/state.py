"""What a ``corral host`` server holds, shared by every protocol mounted on it.

``HostState`` is the extension point for other protocols (PIE's, at /v1/ws): they get the
same programs, instances, identities, auth and limits as the native protocol. See
docs/remote.md, "Mounting another protocol".
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from . import guard
from .errors import LaunchError
from .instances import Instance, InstanceRegistry, build_runner
from .protocol import Launch
from .store import ProgramStore

MiB = 1 << 20


@dataclass(frozen=True)
class HostLimits:
    """The caps of one server (``corral host`` options). Sizes in bytes, times in seconds."""

    max_upload: int = 1 << 30  # one bundle, in all
    max_chunk: int = 8 * MiB  # one upload chunk
    max_message: int = 16 * MiB  # one message frame (values travel as blobs)
    max_frame: int = 512 * MiB  # one WebSocket message (a blob): uvicorn's ws_max_size
    max_blobs: int = 4096  # blobs of one message
    max_connections: int = 64
    max_instances: int = 16  # per client identity
    idle_timeout: float = 300.0  # a session with no instance, nothing in flight, no frame
    send_timeout: float = 30.0  # a client that takes no frame for this long is dropped
    send_buffer: int = 64 * MiB  # bytes queued for one client before it counts as slow
    stream_buffer: int = 64 * MiB  # bytes held for one stream beyond its client's credit
    linger: float = 3600.0  # a detached instance with no client attached (0: forever)
    handshake_timeout: float = 10.0

    def public(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class HostState:
    """The server's programs, instances and rules.

    - ``store``: ``ProgramStore`` (``get(hash)``, ``path(hash)``, ``begin(...)`` uploads)
    - ``instances``: ``InstanceRegistry`` (``get(owner, id)``, ``of(owner)``, ``stop``,
      ``attach``/``detach`` per connection)
    - ``launch(owner, request)``: a started instance (blocking: call from a thread)
    - ``owner(principal, key)``: the owner id of a client key (a hash; keys are never kept)
    - ``authorize(scope)`` / ``upgrade_problem(scope)``: the token, Host and Origin rules;
      ``origin_problem(scope)``: Host and Origin alone
    - ``limits``: ``HostLimits``; ``tags``; ``capabilities()``
    """

    store: ProgramStore
    limits: HostLimits = field(default_factory=HostLimits)
    token: bytes | None = None
    bound: str | None = "127.0.0.1"
    tags: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    insecure: bool = False
    env_root: str | None = None
    instances: InstanceRegistry = field(init=False)
    connections: int = 0
    draining: bool = False
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.instances = InstanceRegistry(max_per_client=self.limits.max_instances,
                                          linger=self.limits.linger)
        self._envs: Any = None
        self._envs_lock = threading.Lock()
        from ..server.origin import OriginPolicy

        #: The HTTP server's Host/Origin rules, for HTTP routes and WebSocket upgrades.
        self.origin_policy = OriginPolicy(
            token=self.token is not None, insecure=self.insecure, bind_host=self.bound,
            allowed_hosts=self.allowed_hosts or None, allowed_origins=self.allowed_origins)

    def __repr__(self) -> str:  # never show the token
        return f"<HostState store={self.store.root} instances={len(self.instances)}>"

    # -- who --------------------------------------------------------------------------------

    def authorize(self, scope: dict) -> bool:
        return guard.token_ok(scope, self.token)

    def upgrade_problem(self, scope: dict) -> tuple[int, str] | None:
        """Why a WebSocket upgrade is refused (HTTP status, text), or None."""
        problem = self.origin_problem(scope)
        if problem is not None:
            return problem
        if not self.authorize(scope):
            return 401, "missing or wrong bearer token"
        if self.draining:
            return 503, "the server is shutting down"
        if self.connections >= self.limits.max_connections:
            return 503, (f"the server has {self.connections} sessions, the most it takes "
                         "(--max-connections)")
        return None

    def origin_problem(self, scope: dict) -> tuple[int, str] | None:
        """The Host/Origin rules alone (status, text), for a protocol with its own token
        carrier (PIE's identity)."""
        return guard.upgrade_refusal(scope, self.origin_policy)

    @staticmethod
    def owner(principal: str, key: str) -> str:
        """The owner id of client key ``key`` under ``principal`` (who the token says)."""
        return blake3.blake3(f"{principal}\0{key}".encode()).hexdigest()[:32]

    # -- what -------------------------------------------------------------------------------

    @property
    def envs(self) -> Any:
        """The plugin machinery's EnvironmentCache (built on first use)."""
        with self._envs_lock:
            if self._envs is None:
                from ..plugins.envs import EnvironmentCache

                self._envs = EnvironmentCache(self.env_root)
            return self._envs

    def launch(self, owner: str, request: Launch) -> Instance:
        """Start an instance for ``owner`` (blocking). LimitExceeded past the cap,
        LaunchError for an unknown program or a bad target, SetupError as locally."""
        folder: Path | None = None
        if request.program is not None:
            if self.store.get(request.program) is None:
                raise LaunchError(f"no program {request.program!r} on this server: upload "
                                  "it first")
            folder = self.store.path(request.program)
        if not isinstance(request.slots, int) or request.slots < 1 \
                or not isinstance(request.workers, int) or request.workers < 1:
            raise LaunchError("slots and workers must be ints >= 1")
        self.instances.reserve(owner)
        try:
            runner, target = build_runner(request, folder, self.envs if (
                request.requirements or (folder and (folder / "corral.toml").is_file()))
                else None)
            inst = Instance(owner, runner, target, request.program, request)
            self.instances.add(inst)
        finally:
            self.instances.unreserve(owner)
        return inst

    def capabilities(self) -> dict[str, Any]:
        """What this machine offers: CPU cores, memory, GPUs, Pythons, environments, tags
        and its load right now."""
        from ..plugins.resources import system_gpus, system_memory_available

        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        total = None
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        total = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        envs = []
        pythons = {sys.version.split()[0]}
        try:
            for env in self.envs.list():
                envs.append({"key": env.key, "requirements": list(env.requirements),
                             "python_version": env.python_version})
                pythons.add(env.python_version)
        except Exception:  # noqa: BLE001 - no uv/pip: no environments to list
            pass
        instances = self.instances.all()
        busy = slots = 0
        for inst in instances:
            try:
                stats = inst.runner.stats()
            except Exception:  # noqa: BLE001
                continue
            workers = getattr(stats, "workers", None)
            busy += stats.busy if workers is None else sum(w.busy for w in workers)
            slots += inst.slots * inst.workers
        return {
            "cpu_cores": cores,
            "memory_total": total,
            "memory_available": system_memory_available(),
            "gpus": [{"index": g.index, "name": g.name, "memory_total": g.total,
                      "memory_free": g.free} for g in system_gpus()],
            "python_versions": sorted(pythons),
            "environments": envs,
            "tags": list(self.tags),
            "load": {"instances": len(instances), "busy_slots": busy, "slots": slots,
                     "sessions": self.connections, "loadavg": list(os.getloadavg())},
        }
