"""Instances: Workers and Pools launched from programs, each owned by one client identity.

An owner sees and touches only its own instances: ``get(owner, id)`` of another owner's
instance raises exactly what an unknown id raises. An instance launched *attached* ends
with the connection that launched it; a *detached* one lives on until it is stopped, or
until ``linger`` seconds pass with no connection of its owner attached to it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ..host.timers import timers
from .errors import InstanceNotFound, LaunchError, LimitExceeded
from .protocol import InstanceInfo, Launch

log = logging.getLogger("corral.host")

#: Worker keywords a network client may set in ``launch(**options)``; the rest (python,
#: env, cwd, allow_pickle...) are the server's to choose.
CLIENT_OPTIONS = frozenset({"timeout", "cancel_grace", "max_calls", "max_rss", "restart",
                            "check_config", "max_queue", "prefetch"})


class Instance:
    def __init__(self, owner: str, runner: Any, target: str, program: str | None,
                 request: Launch):
        self.id = secrets.token_urlsafe(12)
        self.owner = owner
        self.runner = runner
        self.target = target
        self.program = program
        self.slots = request.slots
        self.workers = request.workers
        self.config = dict(request.config)
        self.detached = request.detached
        self.created = time.time()
        self.attached: set[Any] = set()  # the connections attached to it now
        self._linger: Any = None
        self.stopped = False

    def pids(self) -> list[int]:
        workers = getattr(self.runner, "workers", None)
        if workers is None:
            workers = (self.runner,)
        return [w.pid for w in workers if w.pid is not None]

    def info(self) -> InstanceInfo:
        runner = self.runner
        return InstanceInfo(id=self.id, target=self.target, program=self.program,
                            slots=self.slots, workers=self.workers, detached=self.detached,
                            state=str(runner.state), pids=self.pids(),
                            methods=dict(runner.methods),
                            created=self.created, config=self.config)


class InstanceRegistry:
    """Every live instance, by id; thread-safe."""

    def __init__(self, *, max_per_client: int, linger: float, stop_grace: float = 5.0):
        self.max_per_client = max_per_client
        self.linger = linger
        self.stop_grace = stop_grace
        self._lock = threading.Lock()
        self._by_id: dict[str, Instance] = {}
        self._reserved: dict[str, int] = {}  # launches under way, per owner

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Instance]:
        with self._lock:
            return list(self._by_id.values())

    def reserve(self, owner: str) -> None:
        """Count a launch against ``owner``'s cap before it starts (LimitExceeded)."""
        with self._lock:
            have = sum(1 for i in self._by_id.values() if i.owner == owner) \
                + self._reserved.get(owner, 0)
            if have >= self.max_per_client:
                raise LimitExceeded(f"this client has {have} instances already, the most "
                                    f"allowed (--max-instances {self.max_per_client}); stop "
                                    "one first")
            self._reserved[owner] = self._reserved.get(owner, 0) + 1

    def unreserve(self, owner: str) -> None:
        with self._lock:
            left = self._reserved.get(owner, 0) - 1
            if left > 0:
                self._reserved[owner] = left
            else:
                self._reserved.pop(owner, None)

    def add(self, inst: Instance) -> None:
        with self._lock:
            self._by_id[inst.id] = inst

    def get(self, owner: str, instance_id: str) -> Instance:
        with self._lock:
            inst = self._by_id.get(instance_id) if isinstance(instance_id, str) else None
        if inst is None or inst.owner != owner:  # the same answer either way
            raise InstanceNotFound(f"no instance {instance_id!r}")
        return inst

    def of(self, owner: str) -> list[Instance]:
        with self._lock:
            return [i for i in self._by_id.values() if i.owner == owner]

    def stop(self, inst: Instance, grace: float | None = None) -> None:
        """Stop ``inst`` for real (its processes end, busy or not) and forget it. Blocking:
        call from a thread."""
        with self._lock:
            if self._by_id.pop(inst.id, None) is None:
                return
            inst.stopped = True
            if inst._linger is not None:
                inst._linger.cancel()
                inst._linger = None
        try:
            inst.runner.stop(self.stop_grace if grace is None else grace)
        except Exception:  # noqa: BLE001 - stopping must never fail the caller
            log.exception("corral host: stopping instance %s failed", inst.id)

    def attach(self, inst: Instance, conn: Any) -> None:
        with self._lock:
            inst.attached.add(conn)
            if inst._linger is not None:
                inst._linger.cancel()
                inst._linger = None

    def detach(self, inst: Instance, conn: Any) -> None:
        """``conn`` is gone: an attached instance ends, a detached one starts to linger."""
        with self._lock:
            inst.attached.discard(conn)
            if inst.attached or inst.stopped:
                return
            if inst.detached:
                if self.linger > 0:
                    inst._linger = timers.schedule(self.linger, lambda: threading.Thread(
                        target=self._linger_over, args=(inst,), daemon=True).start())
                return
        self.stop(inst)

    def _linger_over(self, inst: Instance) -> None:
        with self._lock:
            if inst.attached or inst.stopped:
                return
        log.info("corral host: instance %s lingered %ss without a client; stopping it",
                 inst.id, self.linger)
        self.stop(inst)

    def stop_all(self, grace: float) -> None:
        for inst in self.all():
            self.stop(inst, grace)


def resolve_target(folder: Path | None, target: str) -> tuple[str, list[str]]:
    """The worker's target reference for ``target`` inside a program ``folder``, and the
    folders it imports from. A file target must stay inside the folder."""
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise LaunchError(f"target {target!r} must look like 'file.py:Name' or "
                          "'package.module:Name'")
    is_file = module_part.endswith(".py") or "/" in module_part
    if folder is None:
        if is_file:
            raise LaunchError(f"target {target!r} names a file, but no program was given: "
                              "upload the file and launch its program")
        return target, []
    if not is_file:
        return target, [str(folder)]
    if module_part.startswith("/") or ".." in Path(module_part).parts:
        raise LaunchError(f"target {target!r} must name a file inside the program")
    full = (folder / module_part).resolve()
    if not full.is_relative_to(folder.resolve()) or not full.is_file():
        raise LaunchError(f"the program has no file {module_part!r} (target {target!r})")
    return f"{full}:{attr}", [str(folder)]


def build_runner(request: Launch, folder: Path | None, envs: Any) -> tuple[Any, str]:
    """A started Worker (or Pool, for ``workers > 1``) for ``request`` and the target it
    runs. Blocking (environment builds, setup): call from a thread. Raises LaunchError,
    or SetupError/WorkerStartupError as a local Worker would."""
    from ..host.pool import Pool
    from ..host.worker import Worker

    target = request.target
    requirements = list(request.requirements or [])
    env: dict[str, str] = {}
    slots = request.slots
    if folder is not None and (folder / "corral.toml").is_file():
        from ..plugins.errors import ManifestError
        from ..plugins.manifest import read_manifest

        try:
            manifest = read_manifest(str(folder))
        except ManifestError as exc:
            raise LaunchError(f"the program's corral.toml is invalid: {exc}") from None
        target = target or manifest.target
        if isinstance(manifest.requirements, str):
            from ..plugins.requirements import read_requirements

            requirements += read_requirements(manifest.requirements)
        else:
            requirements += list(manifest.requirements)
        env.update(manifest.env)
    if not target:
        raise LaunchError("launch needs a target ('file.py:Name' inside the program) unless "
                          "the program has a corral.toml that names one")
    ref, paths = resolve_target(folder, target)
    python = None
    if requirements:
        environment = envs.ensure(requirements)
        python = environment.python
        env.update(environment.worker_env)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]]
                                                     if env.get("PYTHONPATH") else []))
    options = dict(request.options)
    unknown = sorted(set(options) - CLIENT_OPTIONS)
    if unknown:
        raise LaunchError(f"launch options {unknown} are not allowed (allowed: "
                          f"{sorted(CLIENT_OPTIONS)})")
    kwargs: dict[str, Any] = dict(config=request.config, slots=slots, python=python, env=env,
                                  cwd=str(folder) if folder is not None else None)
    pool_only = {k: options.pop(k) for k in ("max_queue",) if k in options}
    kwargs.update(options)
    try:
        if request.workers > 1:
            runner: Any = Pool(ref, workers=request.workers, **pool_only, **kwargs)
        else:
            runner = Worker(ref, **kwargs)
    except (TypeError, ValueError) as exc:
        raise LaunchError(f"bad launch options: {exc}") from None
    runner.start()
    return runner, target
