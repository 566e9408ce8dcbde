"""``PluginManager``: find, install, load, call, reload and unload plugins.

Each loaded plugin is one ``corral.Worker`` (its own process) running on its
environment's interpreter, or on the host's when the plugin has no requirements.

**Config check.** A plugin's config is checked against its target's ``setup()`` type hints
*in the worker*, before the target is built (``Worker(check_config=True)``, which uses the
same converter as call inputs, worker/inputs.py). Not on the host from a cached schema:
the host never imports a plugin (its environment may hold packages the host lacks), a
cache would be stale the moment the plugin's code changes, and checking a JSON Schema on
the host would be a second validator that disagrees with msgspec at the edges
(constraints, custom types). The price is one interpreter start and the import of the
target's module; ``setup()`` never runs with a bad config, so no model is loaded, and the
process is ended before ConfigError is raised: nothing is left running. On ``reload`` the
check runs in the running worker before its target is torn down, so a bad config leaves
the plugin as it was.

**Hot path.** ``call``/``stream`` cost one dict lookup, one clock read (for LRU eviction)
and the Worker's own call: no lock. Lifecycle operations (load, unload, reload, install,
uninstall) take a lock per plugin, so two plugins load at once; resources are reserved
under one short manager lock, so two loads cannot both take the last free gigabyte.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import msgspec

from ..exceptions import InvalidState, SetupError
from .discovery import Discovered, Plugin, discover
from .errors import (
    ConfigError,
    EnvironmentBuildError,
    InsufficientResources,
    PluginBusy,
    PluginError,
    PluginNotFound,
    PluginNotLoaded,
)
from .manifest import Resources
from .resources import Holding, ResourceMonitor

if TYPE_CHECKING:
    from ..host.caller import Runner

_now = time.monotonic

#: Environment states in ``list()``: no requirements (runs on the host's interpreter);
#: not built; being built; built; the last build failed.
ENV_STATES = ("none", "missing", "building", "ready", "failed")


class PluginInfo(msgspec.Struct, kw_only=True):
    """One row of ``PluginManager.list()``. ``memory`` is the worker's RSS in bytes;
    ``methods`` and ``streams`` (the methods that stream) are known once loaded."""

    name: str
    version: str
    source: str
    environment: str
    loaded: bool
    pid: int | None = None
    memory: int | None = None
    methods: list[str] = []
    streams: list[str] = []
    resources: Resources = Resources()
    config: dict[str, Any] | None = None
    detail: str = ""


@dataclass
class _Loaded:
    """A loaded plugin: what the hot path reads (``worker``) and writes (``used``)."""

    plugin: Plugin
    worker: Runner
    config: dict[str, Any]
    python: str | None
    used: float = field(default_factory=_now)
    loaded_at: float = field(default_factory=time.time)
    hold: Any = None  # its environment marked in use (EnvironmentCache.hold), if any

    def holding(self) -> Holding:
        return Holding(self.plugin.name, self.plugin.resources, self.worker.pid)

    def stop(self, grace: float) -> None:
        try:
            self.worker.stop(grace)
        finally:
            if self.hold is not None:
                self.hold.release()


class PluginHandle:
    """A loaded plugin, as ``load()`` returns it: ``call``, ``predict``, ``stream`` go
    straight to its worker. After ``reload`` it follows the new process; after ``unload``
    its calls raise PluginNotLoaded. ``worker`` is the ``corral.Worker`` itself (options,
    submit, async calls)."""

    __slots__ = ("name", "_manager")

    def __init__(self, manager: "PluginManager", name: str):
        self.name = name
        self._manager = manager

    @property
    def worker(self) -> Runner:
        return self._manager._entry(self.name).worker

    @property
    def pid(self) -> int | None:
        return self._manager._entry(self.name).worker.pid

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._manager.call(self.name, method, *args, **kwargs)

    def predict(self, /, *args: Any, **kwargs: Any) -> Any:
        return self._manager.call(self.name, "predict", *args, **kwargs)

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        return self._manager.stream(self.name, method, *args, **kwargs)

    def get_state(self) -> dict[str, Any]:
        return self._manager.get_state(self.name)

    def __repr__(self) -> str:
        return f"<PluginHandle {self.name}>"


class PluginManager:
    """Plugins found on ``paths`` (plugin folders, or folders of them), in ``plugins_dir``
    and, with ``entry_points``, in installed distributions (see discovery.py).

    ``environments`` builds and caches one environment per requirement set (default:
    ``corral.plugins.envs.EnvironmentCache()``, made on first need); any object with
    ``ensure(requirements, progress=) -> env``, ``get(requirements) -> env | None``,
    ``list()`` and ``remove(key)`` will do, ``env`` having ``python``, ``key`` and
    ``path``. ``resources`` reads free memory and GPUs (a ``ResourceMonitor``; inject one
    to budget deterministically). ``evict`` is the default eviction policy of ``load``
    (None or ``"lru"``); ``stop_grace`` the seconds calls in flight get when a plugin is
    unloaded. ``worker_options`` are passed to every ``corral.Worker`` (``timeout``,
    ``restart``, ``max_rss``...). ``runner`` makes each plugin's runner, called as
    ``runner(target, config=, python=, env=, cwd=, **worker_options)`` (default
    ``corral.Worker``; any ``Runner`` will do).

    Thread-safe. A context manager: leaving it (or ``close()``) unloads every plugin.
    """

    def __init__(self, paths: Any = (), *, plugins_dir: str | None = None,
                 entry_points: bool = True, environments: Any = None,
                 resources: ResourceMonitor | None = None, evict: str | None = None,
                 stop_grace: float = 10.0, runner: Callable[..., Any] | None = None,
                 **worker_options: Any):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        _check_evict(evict)
        self.paths = [os.fspath(p) for p in paths]
        self.plugins_dir = plugins_dir
        self.entry_points = entry_points
        self.resources = resources or ResourceMonitor()
        self.evict = evict
        self.stop_grace = stop_grace
        self.worker_options = worker_options
        self._make_runner = runner
        self._environments = environments
        self._lock = threading.RLock()  # the maps below; never held while a process starts
        self._loaded: dict[str, _Loaded] = {}  # the hot path's one lookup
        self._loading: dict[str, Holding] = {}  # reserved while starting
        self._gone: dict[str, str] = {}  # why a plugin is no longer loaded (evicted...)
        self._name_locks: dict[str, threading.Lock] = {}
        self._building: set[str] = set()
        self._failed: dict[str, str] = {}  # last environment build failure, by plugin
        self._found: Discovered | None = None
        self._closed = False

    # -- discovery ------------------------------------------------------------------------

    def refresh(self) -> Discovered:
        """Search the paths, the plugins directory and the entry points again."""
        found = discover(self.paths, self.plugins_dir, self.entry_points)
        with self._lock:
            self._found = found
        return found

    def plugins(self) -> dict[str, Plugin]:
        """Every plugin found, by name (searched again on each call)."""
        return dict(self.refresh().plugins)

    def problems(self) -> list[PluginError]:
        """Manifests that could not be read, and plugins shadowed by another of the same
        name, from the last search."""
        found = self._found or self.refresh()
        return list(found.problems)

    def plugin(self, name: str) -> Plugin:
        """The plugin called ``name`` (searching again if it is not known yet)."""
        found = self._found
        if found is None or name not in found.plugins:
            found = self.refresh()
        try:
            return found.plugins[name]
        except KeyError:
            known = ", ".join(sorted(found.plugins)) or "none"
            bad = [p for p in found.problems if name in str(p)]
            hint = f"; {bad[0]}" if bad else ""
            raise PluginNotFound(f"no plugin named {name!r} (found: {known}){hint}") from None

    # -- environments -------------------------------------------------------------------------

    @property
    def environments(self) -> Any:
        if self._environments is None:
            try:
                from .envs import EnvironmentCache
            except ImportError as exc:
                raise EnvironmentBuildError(
                    f"plugins with requirements need the environment layer "
                    f"(corral.plugins.envs), which cannot be imported: {exc}") from None
            self._environments = EnvironmentCache()
        return self._environments

    def environment_state(self, name: str) -> str:
        """One of ENV_STATES for plugin ``name``."""
        return self._env_state(self.plugin(name))[0]

    def _env_state(self, plugin: Plugin) -> tuple[str, str]:
        if plugin.name in self._building:
            return "building", ""
        try:
            reqs = plugin.requirements()
            if not reqs:
                return "none", ""
            if self.environments.get(reqs) is not None:
                return "ready", ""
        except Exception as exc:  # noqa: BLE001 - reported in the row, not raised by list()
            return "failed", str(exc)
        failed = self._failed.get(plugin.name)
        return ("failed", failed) if failed is not None else ("missing", "")

    def install(self, name: str, progress: Callable[[str], Any] | None = None) -> Any:
        """Build plugin ``name``'s environment ahead of time (``progress`` receives the
        builder's progress lines). Returns the environment, or None for a plugin without
        requirements (it runs on the host's interpreter). Raises EnvironmentBuildError
        with the installer's message; nothing half-built is kept."""
        plugin = self.plugin(name)
        with self._name_lock(name):
            return self._ensure(plugin, progress)

    def _ensure(self, plugin: Plugin, progress: Callable[[str], Any] | None) -> Any:
        reqs = plugin.requirements()
        if not reqs:
            return None
        with self._lock:
            self._building.add(plugin.name)
        try:
            env = self.environments.ensure(reqs, progress=progress)
        except BaseException as exc:
            with self._lock:
                self._failed[plugin.name] = str(exc).split("\n", 1)[0]
            raise
        finally:
            with self._lock:
                self._building.discard(plugin.name)
        with self._lock:
            self._failed.pop(plugin.name, None)
        return env

    def uninstall(self, name: str) -> bool:
        """Remove plugin ``name``'s environment, unless another plugin found on the search
        path uses the same one. Never while it is loaded (PluginBusy). Returns whether an
        environment was removed."""
        plugin = self.plugin(name)
        with self._name_lock(name):
            if name in self._loaded or name in self._loading:
                raise PluginBusy(f"plugin {name!r} is loaded: unload it before uninstalling")
            reqs = plugin.requirements()
            if not reqs:
                return False
            env = self.environments.get(reqs)
            if env is None:
                return False
            for other in self.plugins().values():
                if other.name == name:
                    continue
                other_reqs = other.requirements()
                if other_reqs:
                    shared = self.environments.get(other_reqs)
                    if shared is not None and shared.key == env.key:
                        return False  # (another plugin's too: it stays)
            self.environments.remove(env.key)
            with self._lock:
                self._failed.pop(name, None)
            return True

    # -- load, unload, reload ---------------------------------------------------------------

    def load(self, name: str, config: dict[str, Any] | None = None, *,
             evict: str | None = None) -> PluginHandle:
        """Start plugin ``name`` with ``config`` (``setup()``'s keyword arguments) and
        return its handle; builds its environment first if needed.

        Raises ConfigError listing every problem of the config (nothing is left running),
        InsufficientResources when its declared memory or GPU memory is not free (with
        ``evict="lru"``, or the manager's ``evict``, the least recently used idle plugins
        are unloaded first to make room), SetupError when its ``setup()`` fails, and
        PluginBusy when it is already loaded with another config (the same config returns
        the loaded plugin's handle)."""
        config = _check_config(name, config)
        policy = self.evict if evict is None else evict
        _check_evict(policy)
        if self._closed:
            raise InvalidState("the plugin manager is closed")
        with self._name_lock(name):
            entry = self._loaded.get(name)
            if entry is not None and entry.worker.state in ("failed", "stopped"):
                self._stop(name, f"its worker {entry.worker.state}")  # gave up: start anew
                entry = None
            if entry is not None:
                if entry.config == config:
                    return PluginHandle(self, name)
                raise PluginBusy(f"plugin {name!r} is already loaded with another config: "
                                 f"reload({name!r}, config) changes it")
            plugin = self.plugin(name)
            env = self._ensure(plugin, None)
            if policy == "lru" and not self._fits_as_is(plugin):
                # Check the config before unloading anyone for it: a ConfigError must not
                # cost other plugins their place (a worker that imports, checks, builds
                # nothing).
                self._preflight(plugin, config, env)
            self._start(plugin, config, env, policy)
            return PluginHandle(self, name)

    def _fits_as_is(self, plugin: Plugin) -> bool:
        """Whether the plugin fits without evicting anyone, right now (advisory: the
        reservation in _start decides)."""
        with self._lock:
            holding = self._holding()
        try:
            self.resources.fit(plugin.name, plugin.resources, holding)
        except InsufficientResources:
            return False
        return True

    def _preflight(self, plugin: Plugin, config: dict[str, Any], env: Any) -> None:
        check = self._worker(plugin, config, env, check_config="only", restart=False)
        try:
            check.start()
        except SetupError as exc:
            if exc.problems:
                raise ConfigError(plugin.name, exc.problems) from None
            raise
        finally:
            check.stop()

    def _worker(self, plugin: Plugin, config: dict[str, Any], env: Any,
                **options: Any) -> Runner:
        """A (not started) runner (``corral.Worker``) for ``plugin``, on ``env``'s
        interpreter."""
        make = self._make_runner
        if make is None:
            from ..host.worker import Worker as make

        return make(plugin.target, config=config, python=getattr(env, "python", None),
                    env=self._worker_env(plugin, env), cwd=plugin.folder, **options)

    def _start(self, plugin: Plugin, config: dict[str, Any], env: Any,
               policy: str | None) -> _Loaded:
        """Reserve the plugin's resources (evicting if allowed), start its worker and
        register it (under its name lock)."""
        name = plugin.name
        victims = self._reserve(plugin, policy)
        try:  # from here on the reservation is given back however this ends
            # Every victim is stopped and let go even if stopping one fails (Ctrl-C): they
            # are out of the maps already, so nothing else would ever end them.
            with contextlib.ExitStack() as stops:
                for victim in victims:
                    stops.callback(self._name_locks[victim.plugin.name].release)
                    stops.callback(victim.stop, self.stop_grace)
            worker = self._worker(plugin, config, env, slots=plugin.manifest.slots,
                                  check_config=True, **self.worker_options)
            # Marked in use while its worker runs: `corral plugins uninstall` in another
            # process must not delete it under a loaded plugin.
            hold_env = getattr(self.environments, "hold", None) if env is not None else None
            hold = hold_env(env) if hold_env is not None else None
            try:
                worker.start()
            except BaseException as exc:
                worker.stop()
                if hold is not None:
                    hold.release()
                if isinstance(exc, SetupError) and exc.problems:
                    raise ConfigError(name, exc.problems) from None
                raise
        finally:
            with self._lock:
                self._loading.pop(name, None)
        entry = _Loaded(plugin, worker, config, getattr(env, "python", None), hold=hold)
        with self._lock:
            if self._closed:  # closed while it started
                entry.stop(self.stop_grace)
                raise InvalidState("the plugin manager was closed while the plugin loaded")
            self._loaded[name] = entry
            self._gone.pop(name, None)
        return entry

    def _reserve(self, plugin: Plugin, policy: str | None) -> list[_Loaded]:
        """Check the plugin fits and reserve its declared resources; returns the plugins
        to evict first, already out of reach of new calls, each with its name lock held
        (the caller stops them and lets go)."""
        need = plugin.resources
        with self._lock:
            holding = self._holding()
            taken: list[Holding] = []

            def candidates() -> Iterator[Holding]:
                # Idle (nothing in flight or queued), least recently used first; a plugin
                # whose lock another thread holds (reloading, unloading) is not idle.
                for n, e in sorted(self._loaded.items(), key=lambda item: item[1].used):
                    if e.worker.load:
                        continue
                    lock = self._name_lock(n)
                    if lock.acquire(blocking=False):
                        taken.append(e.holding())
                        yield taken[-1]

            try:
                victims = self.resources.fit(plugin.name, need, holding,
                                             candidates() if policy == "lru" else ())
            except BaseException:
                for h in taken:
                    self._name_locks[h.name].release()
                raise
            for h in taken:
                if h not in victims:
                    self._name_locks[h.name].release()
            evicted = []
            for h in victims:  # no new calls reach it from now on
                evicted.append(self._loaded.pop(h.name))
                self._gone[h.name] = (f"evicted (least recently used and idle) to make room "
                                      f"for {plugin.name!r}")
            self._loading[plugin.name] = Holding(plugin.name, need, None)
        return evicted

    def _holding(self) -> list[Holding]:
        """What the loaded and loading plugins hold (under ``_lock``)."""
        return [e.holding() for e in self._loaded.values()] + list(self._loading.values())

    def _worker_env(self, plugin: Plugin, environment: Any = None) -> dict[str, str]:
        # An environment of its own blanks the host's PYTHONPATH (its worker must see only
        # its own packages); the manifest's variables come on top.
        env = dict(getattr(environment, "worker_env", None) or {})
        env.update(plugin.manifest.env)
        if plugin.pythonpath:  # "module:Class" targets import from the plugin's folder
            parts = [*plugin.pythonpath, env["PYTHONPATH"] if "PYTHONPATH" in env
                     else os.environ.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
        return env

    def unload(self, name: str) -> bool:
        """End plugin ``name``'s worker: calls in flight get ``stop_grace`` seconds, then
        the process (and whatever it started) ends, so all its memory, GPU memory
        included, returns to the OS. Returns False if it was not loaded."""
        if name not in self._loaded:
            self.plugin(name)  # an unknown name is PluginNotFound, not False
        with self._name_lock(name):
            return self._stop(name, "unloaded")

    def _stop(self, name: str, why: str) -> bool:
        with self._lock:
            entry = self._loaded.pop(name, None)
            if entry is None:
                return False
            self._gone[name] = why
        entry.stop(self.stop_grace)
        return True

    def reload(self, name: str, config: dict[str, Any] | None = None, *,
               fresh: bool = False) -> PluginHandle:
        """Give loaded plugin ``name`` a new ``config``. In place when it can (the same
        process runs ``teardown()``, then builds the target again with the new config):
        a config that does not fit raises ConfigError and the plugin goes on as it was.
        A new process instead with ``fresh=True``, when the plugin's manifest changed
        since it was loaded (target, requirements, environment variables, slots), or when
        its worker is not ready: the old process ends first (its memory is given back
        before the new one takes any), and a bad config then leaves it unloaded. A setup
        that fails leaves it unloaded too (SetupError)."""
        config = _check_config(name, config)
        with self._name_lock(name):
            entry = self._loaded.get(name)
            if entry is None:
                raise self._not_loaded(name)
            plugin = self.refresh().plugins.get(name)  # its manifest as it is now
            if plugin is None:
                raise PluginNotFound(f"plugin {name!r} is no longer on the search path")
            changed = _process_changed(entry.plugin, plugin)
            if not fresh and not changed and entry.worker.state == "ready":
                try:
                    entry.worker.reload(config)
                except SetupError as exc:
                    if exc.problems:
                        raise ConfigError(name, exc.problems) from None
                    self._stop(name, f"its reload failed: {str(exc).splitlines()[0]}")
                    raise
                entry.config = config
                entry.used = _now()
                return PluginHandle(self, name)
            self._stop(name, "reloading in a new process")
            env = self._ensure(plugin, None)
            self._start(plugin, config, env, self.evict)
            return PluginHandle(self, name)

    # -- calls ----------------------------------------------------------------------------

    def call(self, name: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of loaded plugin ``name`` and return its result (see
        ``corral.Worker.call``)."""
        try:
            entry = self._loaded[name]
        except KeyError:
            raise self._not_loaded(name) from None
        entry.used = _now()
        return entry.worker.call(method, *args, **kwargs)

    def stream(self, name: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call a generator ``method`` of loaded plugin ``name``; iterate the result for
        its items as they come (see ``corral.Worker.stream``)."""
        try:
            entry = self._loaded[name]
        except KeyError:
            raise self._not_loaded(name) from None
        entry.used = _now()
        return entry.worker.stream(method, *args, **kwargs)

    execute = call

    def handle(self, name: str) -> PluginHandle:
        """The handle of loaded plugin ``name``."""
        self._entry(name)
        return PluginHandle(self, name)

    def _entry(self, name: str) -> _Loaded:
        try:
            return self._loaded[name]
        except KeyError:
            raise self._not_loaded(name) from None

    def _not_loaded(self, name: str) -> PluginError:
        why = self._gone.get(name)
        if why is not None:
            return PluginNotLoaded(f"plugin {name!r} is not loaded: it was {why}")
        found = self._found
        if found is not None and name not in found.plugins and name not in self._loading:
            try:
                self.plugin(name)
            except PluginNotFound as exc:
                return exc
        return PluginNotLoaded(f"plugin {name!r} is not loaded: load({name!r}) first")

    # -- introspection --------------------------------------------------------------------

    def list(self) -> list[PluginInfo]:
        """Every plugin found, loaded or not, by name."""
        rows = []
        found = self.refresh()
        with self._lock:
            loaded = dict(self._loaded)
        names = sorted(set(found.plugins) | set(loaded))
        for name in names:
            entry = loaded.get(name)
            plugin = entry.plugin if entry is not None and name not in found.plugins \
                else found.plugins[name]
            env, detail = self._env_state(plugin)
            row = PluginInfo(name=name, version=plugin.version, source=plugin.source,
                             environment=env, loaded=entry is not None,
                             resources=plugin.resources, detail=detail)
            if entry is not None:
                worker = entry.worker
                row.pid = worker.pid
                row.memory = worker.stats().rss
                row.methods = sorted(worker.methods)
                row.streams = sorted(n for n, m in worker.methods.items() if m.streams)
                row.config = dict(entry.config)
                if worker.state != "ready":  # (health() asks the process only when ready)
                    health = worker.health()
                    row.detail = f"worker {health.status}" + (
                        f": {health.detail}" if health.detail else "")
            rows.append(row)
        return rows

    def get_state(self, name: str) -> dict[str, Any]:
        """Loaded plugin ``name``'s health, stats, config, pid and memory, and what its
        target's own ``get_state()`` returns if it defines one (``target``)."""
        entry = self._entry(name)
        worker = entry.worker
        health = worker.health()
        stats = worker.stats()
        state: dict[str, Any] = {
            "name": name,
            "version": entry.plugin.version,
            "pid": worker.pid,
            "memory": stats.rss,
            "config": dict(entry.config),
            "python": entry.python,
            "health": msgspec.structs.asdict(health),
            "stats": msgspec.structs.asdict(stats),
            "loaded_at": entry.loaded_at,
            "idle_s": _now() - entry.used,
        }
        if "get_state" in worker.methods:
            state["target"] = worker.call("get_state")
        return state

    def loaded(self) -> list[str]:
        """The names of the loaded plugins."""
        return sorted(self._loaded)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Unload every plugin (idempotent); the manager loads nothing afterwards."""
        with self._lock:  # _start registers under this lock: it sees the flag, or we see it
            self._closed = True
            names = list(self._loaded)
        for name in names:
            with self._name_lock(name):
                self._stop(name, "unloaded (the manager was closed)")

    def __enter__(self) -> "PluginManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            lock = self._name_locks.get(name)
            if lock is None:
                lock = self._name_locks[name] = threading.Lock()
            return lock

    def __repr__(self) -> str:
        return f"<PluginManager loaded={self.loaded()}>"


def _check_config(name: str, config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(name, [{"loc": [], "msg": f"the config must be a dict of setup()'s "
                                                    f"keyword arguments, not "
                                                    f"{type(config).__name__}"}])
    bad = [{"loc": [repr(k)], "msg": "config keys must be str"}
           for k in config if not isinstance(k, str)]
    if bad:
        raise ConfigError(name, bad)
    return dict(config)


def _check_evict(policy: Any) -> None:
    if policy not in (None, "lru"):
        raise ValueError(f"evict must be None or 'lru', not {policy!r}")


def _process_changed(old: Plugin, new: Plugin) -> bool:
    """Whether the plugin now needs another process than the one running (an in-place
    reload keeps the interpreter, environment variables and slots)."""
    a, b = old.manifest, new.manifest
    return (old.target, a.requirements, a.env, a.slots, old.pythonpath) != \
        (new.target, b.requirements, b.env, b.slots, new.pythonpath)
