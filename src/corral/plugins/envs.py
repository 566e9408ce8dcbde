"""One virtualenv per distinct requirement set, built once and reused.

``EnvironmentCache(root).ensure(["torch==2.13.0"])`` gives an Environment whose
``python`` runs a worker (``corral.Worker(target, python=env.python, env=env.worker_env)``).

- **Key.** A hash of the normalized requirements (requirements.py), the contents of the
  constraint files they name, the base interpreter (real path + ``sys.version``), the
  host's corral package folder and msgspec version, and ``LAYOUT_VERSION``. An equal key
  is an equal environment, so a second ``ensure()`` reads one JSON file and starts nothing.
- **Builder.** uv when installed (``uv venv`` + ``uv pip install``), else ``python -m
  venv`` + pip (installers.py): 0.6 s against 12 s for msgspec alone, 1.7 s against 70 s
  for torch from local wheels (benchmarks/results/envs.md). uv is given the user's pip
  configuration as flags, since it reads no pip.conf (pipconfig.py).
- **Worker runtime.** The environment gets msgspec (pinned to the host's version, unless
  the requirements name msgspec themselves) and a folder ``corral-runtime/`` holding only a
  symlink ``corral -> <the host's corral package>``, put on ``sys.path`` by a ``.pth`` file
  in site-packages. Why a link and not an install: the worker always runs the host's own
  corral, so the protocol versions match by construction (the handshake would refuse a
  copy from another release); it costs nothing per build (an editable checkout would
  need a wheel build, a copy would go stale on every upgrade or edit); and it exposes the
  ``corral`` package alone, never the rest of the host's site-packages (no host torch).
  The host's corral folder is part of the key, so two checkouts never share a link.
- **Atomic builds.** A build runs at its final path under a per-key file lock (``flock``:
  threads and processes alike; a second builder waits, then reuses) and is complete only
  once ``corral-env.json`` exists, written last by rename. Any failure, Ctrl-C included,
  removes the folder; a folder without the marker (a build killed with SIGKILL) is
  removed and rebuilt by the next ensure(). Why not build in a temporary folder and
  rename: a venv is not relocatable. Its interpreter link survives a rename, but pip's
  entry-point scripts (``bin/pip``) keep the build path in their ``#!`` line and
  ``bin/activate`` hard-codes it, so a renamed pip-built environment has broken scripts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..host.process import describe_exit
from .errors import EnvironmentBuildError, EnvironmentInUse, RequirementsError
from .installers import Installer, StepFailed, run_step, select_installer
from .requirements import (
    INLINE,
    constraint_files,
    normalize_requirements,
    read_requirements,
    requirement_names,
)

__all__ = ["Environment", "EnvironmentCache", "default_root", "read_requirements"]

# Bump when what a built environment holds changes shape: every key changes with it.
LAYOUT_VERSION = 1
METADATA_FILE = "corral-env.json"
REQUIREMENTS_FILE = "corral-requirements.txt"
RUNTIME_DIR = "corral-runtime"
PTH_FILE = "_corral_runtime.pth"
LOCKS_DIR = ".locks"
KEY_LENGTH = 24  # hex digits of sha256: 96 bits
MSGSPEC_FLOOR = "msgspec>=0.18"  # the oldest msgspec corral's worker runs on

_KEY_PATTERN = re.compile(r"^[0-9a-f]{%d}$" % KEY_LENGTH)
_RUNTIME_CHECK = """\
import json, os, msgspec, corral
found = {"corral": os.path.dirname(os.path.realpath(corral.__file__)),
         "msgspec": msgspec.__version__}
try:
    import corral.worker.main
except Exception as exc:
    found["error"] = f"import corral.worker.main: {type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


def default_root() -> Path:
    """``$CORRAL_HOME/envs``, else ``$XDG_CACHE_HOME/corral/envs``, else
    ``~/.cache/corral/envs``."""
    if os.environ.get("CORRAL_HOME"):
        return Path(os.environ["CORRAL_HOME"]).expanduser() / "envs"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "corral" / "envs"
    return Path.home() / ".cache" / "corral" / "envs"


@dataclass(frozen=True)
class Environment:
    """One built, complete environment in the cache."""

    key: str
    path: Path
    python: str  # its interpreter: Worker(python=env.python)
    requirements: tuple[str, ...]  # normalized, as asked (without the runtime's msgspec)
    created_at: float  # time.time() when the build finished
    installer: str  # "uv" or "pip"
    python_version: str  # e.g. "3.11.7"
    build_seconds: float

    @property
    def size_bytes(self) -> int:
        """Bytes of the files in its folder (each hard-linked file once; the runtime link
        to the host's corral is not followed). Walks the folder on every access."""
        return _tree_size(self.path)

    @property
    def worker_env(self) -> dict[str, str]:
        """Variables for ``Worker(env=...)``: blank the host's PYTHONPATH and PYTHONHOME
        (a worker inherits the host's environment) so that the environment sees only its
        own packages and corral. (Python ignores these variables when empty.)"""
        return {"PYTHONPATH": "", "PYTHONHOME": ""}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for a CLI listing (computes the size)."""
        return {"key": self.key, "path": str(self.path), "python": self.python,
                "python_version": self.python_version, "requirements": list(self.requirements),
                "installer": self.installer, "created_at": self.created_at,
                "build_seconds": self.build_seconds, "size_bytes": self.size_bytes}


class Hold:
    """An environment marked in use (``EnvironmentCache.hold()``); ``release()`` ends it."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the shared lock


@dataclass(frozen=True)
class _Interpreter:
    executable: str  # what the installers are given
    real_path: str
    version: str  # sys.version: release, build and compiler

    @property
    def short_version(self) -> str:
        return self.version.split()[0]


class EnvironmentCache:
    """Builds, finds, lists and removes environments under ``root``.

    ``root`` defaults to default_root(). ``python`` is the base interpreter of every
    environment (default: this one). ``installer`` is ``"auto"`` (uv when installed, else
    pip), ``"uv"`` or ``"pip"``. Safe to use from many threads and processes at once.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, python: str | None = None,
                 installer: str = "auto"):
        self.root = Path(os.path.abspath(os.path.expanduser(root))) if root is not None \
            else default_root()
        self._interpreter = _identify(python)
        self._installer: Installer = select_installer(installer)
        self._corral_dir, self._corral_version, self._msgspec_version = _host_runtime()

    @property
    def installer(self) -> str:
        """The installer builds use: ``"uv"`` or ``"pip"``."""
        return self._installer.name

    @property
    def python(self) -> str:
        """The base interpreter of this cache's environments."""
        return self._interpreter.executable

    # -- lookup ---------------------------------------------------------------------------

    def key(self, requirements: Sequence[str]) -> str:
        """The key of the environment for ``requirements`` (normalized first: order,
        spelling and duplicates do not change it)."""
        return self._key(normalize_requirements(requirements))

    def get(self, requirements: Sequence[str]) -> Environment | None:
        """The built, complete environment for ``requirements``, or None. Starts nothing."""
        return self._load(self.key(requirements))

    def list(self) -> list[Environment]:
        """Every complete environment in the cache, oldest first (a build in progress or
        a killed one is not listed)."""
        if not self.root.is_dir():
            return []
        found = [self._load(p.name) for p in self.root.iterdir()
                 if _KEY_PATTERN.match(p.name)]
        return sorted((e for e in found if e is not None), key=lambda e: e.created_at)

    # -- changes --------------------------------------------------------------------------

    def ensure(self, requirements: Sequence[str], *,
               progress: Callable[[str], None] | None = None) -> Environment:
        """The environment for ``requirements``: found in the cache, or built now.

        ``progress`` gets human-readable lines: phase changes and the installer's output.
        Concurrent calls for the same requirements (threads or processes) build once;
        the others wait and reuse it. A failed build raises EnvironmentBuildError with
        the installer's output and leaves nothing in the cache.
        """
        report = progress or _ignore
        lines = normalize_requirements(requirements)
        key = self._key(lines)
        found = self._load(key)
        if found is not None:
            return found
        with self._locked(key, report):
            found = self._load(key)  # built by another process while this one waited
            if found is not None:
                report(f"environment {key} was built meanwhile: reusing it")
                return found
            path = self.root / key
            if path.exists():
                report(f"removing the incomplete environment {key} (a build was killed)")
                shutil.rmtree(path)
            try:
                return self._build(key, lines, report)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise

    def hold(self, env: Environment) -> "Hold":
        """Mark ``env`` in use until the hold is released (``release()``, or this process
        ends): meanwhile ``remove()`` of it refuses with EnvironmentInUse, in this process
        or any other. Any number of holders (a shared ``flock``)."""
        fd = self._lock_fd(env.key, "use")
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a remove() is deleting it
        if not (env.path / METADATA_FILE).exists():
            os.close(fd)
            raise EnvironmentBuildError(f"environment {env.key} was removed meanwhile")
        return Hold(fd)

    def remove(self, key: str) -> None:
        """Delete the environment ``key`` (waiting for a build of it to finish first).
        KeyError if the cache has no such environment; EnvironmentInUse while a worker
        runs in it (see ``hold()``)."""
        if not isinstance(key, str) or not _KEY_PATTERN.match(key):
            raise ValueError(f"not an environment key: {key!r} (expected {KEY_LENGTH} hex "
                             "digits, as Environment.key)")
        path = self.root / key
        if not path.exists():
            raise KeyError(f"no environment {key} in {self.root}")
        with self._locked(key, _ignore):
            use = self._lock_fd(key, "use")
            try:
                try:
                    fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise EnvironmentInUse(
                        f"environment {key} is in use: a loaded plugin's worker runs in it "
                        "(unload it first)") from None
                with contextlib.suppress(FileNotFoundError):
                    (path / METADATA_FILE).unlink()  # incomplete at once for readers
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(use)

    # -- internals ------------------------------------------------------------------------

    def _runtime_requirements(self, lines: tuple[str, ...]) -> list[str]:
        # The worker needs msgspec. The host's own version is known to speak the protocol;
        # a plugin that names msgspec itself gets its choice, above corral's floor.
        if "msgspec" in requirement_names(lines):
            return [MSGSPEC_FLOOR]
        return [f"msgspec=={self._msgspec_version}"]

    def _key(self, lines: tuple[str, ...]) -> str:
        constraints = {}
        for path in constraint_files(lines):
            try:
                constraints[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError as exc:
                raise RequirementsError(INLINE, f"cannot read constraint file {path}: "
                                        f"{exc.strerror or exc}") from exc
        payload = {
            "layout": LAYOUT_VERSION,
            "requirements": lines,
            "runtime": self._runtime_requirements(lines),
            "constraints": constraints,
            "interpreter": [self._interpreter.real_path, self._interpreter.version],
            "corral": self._corral_dir,
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]

    def _load(self, key: str) -> Environment | None:
        path = self.root / key
        try:
            meta = json.loads((path / METADATA_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("layout") != LAYOUT_VERSION:
            return None
        python = path / "bin" / "python"
        # the base interpreter or the host's corral gone: as good as not built
        if not python.exists() or not (path / RUNTIME_DIR / "corral").exists():
            return None
        try:
            return Environment(
                key=key, path=path, python=str(python),
                requirements=tuple(meta["requirements"]), created_at=meta["created_at"],
                installer=meta["installer"], python_version=meta["python_version"],
                build_seconds=meta["build_seconds"])
        except (KeyError, TypeError):
            return None

    def _lock_fd(self, key: str, kind: str) -> int:
        locks = self.root / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        return os.open(locks / f"{key}.{kind}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextlib.contextmanager
    def _locked(self, key: str, report: Callable[[str], None]) -> Iterator[None]:
        # One lock file per key, kept: deleting a lock file races with a process that has
        # just opened it. flock() conflicts between separate open()s, so this excludes
        # other threads of this process as well as other processes.
        fd = self._lock_fd(key, "lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report(f"waiting for another build of environment {key} to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _build(self, key: str, lines: tuple[str, ...],
               report: Callable[[str], None]) -> Environment:
        started = time.monotonic()
        path = self.root / key
        interpreter = self._interpreter
        installer = self._installer
        installed = [*lines, *self._runtime_requirements(lines)]
        report(f"building environment {key} with {installer.name} "
               f"(Python {interpreter.short_version}) in {path}")
        try:
            report("creating the virtualenv")
            installer.create(interpreter.executable, path, report)
            report("linking corral's worker runtime")
            _link_runtime(path, self._corral_dir)
            requirements_file = path / REQUIREMENTS_FILE
            requirements_file.write_text("\n".join(installed) + "\n")
            report("installing " + ", ".join(installed))
            env_python = str(path / "bin" / "python")
            installer.install(env_python, requirements_file, report)
            report("checking the worker runtime")
            self._check_runtime(env_python, path, report)
        except StepFailed as exc:
            wanted = ", ".join(lines) or "no requirements"
            how = f" ({describe_exit(exc.returncode)[0]})" if exc.returncode is not None else ""
            raise EnvironmentBuildError(
                f"building the environment for {wanted} failed: {exc.what} failed{how}",
                exc.output) from None
        meta = {
            "layout": LAYOUT_VERSION, "key": key, "requirements": list(lines),
            "installed": installed, "installer": installer.name,
            "interpreter": interpreter.real_path,
            "python_version": interpreter.short_version,
            "corral": {"path": self._corral_dir, "version": self._corral_version},
            "created_at": time.time(), "build_seconds": time.monotonic() - started,
        }
        tmp = path / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, path / METADATA_FILE)  # the build is complete from here on
        report(f"environment {key} ready ({meta['build_seconds']:.1f} s)")
        env = self._load(key)
        assert env is not None
        return env

    def _check_runtime(self, env_python: str, path: Path,
                       report: Callable[[str], None]) -> None:
        # -I: no PYTHON* variables, no user site, no current folder on sys.path: the
        # environment's own view, as a worker gets it.
        output = run_step("the worker runtime check", [env_python, "-I", "-c", _RUNTIME_CHECK],
                          cwd=path, progress=_ignore)
        try:
            found = json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise StepFailed("the worker runtime check", [env_python], None, output) from None
        if os.path.realpath(found["corral"]) != os.path.realpath(self._corral_dir):
            raise StepFailed(
                "the worker runtime check", [env_python], None,
                f"the environment imports corral from {found['corral']}, not the host's "
                f"{self._corral_dir}: do the requirements install a package named corral?")
        if "error" in found:
            raise StepFailed("the worker runtime check", [env_python], None, found["error"])
        report(f"worker runtime: corral {self._corral_version} (linked), "
               f"msgspec {found['msgspec']}")


# -- helpers --------------------------------------------------------------------------------


def _ignore(line: str) -> None:
    pass


def _host_runtime() -> tuple[str, str, str]:
    """The host's corral package folder, corral's version and msgspec's version."""
    import msgspec

    import corral

    return (os.path.dirname(os.path.realpath(corral.__file__)), corral.__version__,
            msgspec.__version__)


_identities: dict[tuple[str, int, int], _Interpreter] = {}
_identities_lock = threading.Lock()


def _identify(python: str | None) -> _Interpreter:
    """The interpreter ``python`` (a path or a name on PATH; default this one): its real
    path and ``sys.version``. Asking another interpreter costs one subprocess, once per
    binary per process (remembered by real path, size and mtime)."""
    if python is None or os.path.realpath(shutil.which(python) or python) in (
            os.path.realpath(sys.executable),
            os.path.realpath(getattr(sys, "_base_executable", sys.executable))):
        return _Interpreter(python or sys.executable, os.path.realpath(sys.executable),
                            sys.version)
    found = shutil.which(python)
    if found is None:
        raise FileNotFoundError(f"python interpreter not found: {python!r}")
    real = os.path.realpath(found)
    st = os.stat(real)
    memo = (real, st.st_size, st.st_mtime_ns)
    with _identities_lock:
        if memo in _identities:
            return _identities[memo]
    try:
        proc = subprocess.run([found, "-I", "-c", "import sys; print(sys.version)"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentBuildError(f"cannot run the interpreter {python!r}", str(exc)) from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        raise EnvironmentBuildError(f"the interpreter {python!r} does not run",
                                    proc.stdout + proc.stderr)
    identity = _Interpreter(found, real, " ".join(proc.stdout.split()))
    with _identities_lock:
        _identities[memo] = identity
    return identity


def _link_runtime(path: Path, corral_dir: str) -> None:
    """``<env>/corral-runtime/corral -> corral_dir``, on sys.path through a .pth file."""
    runtime = path / RUNTIME_DIR
    runtime.mkdir()
    (runtime / "corral").symlink_to(corral_dir, target_is_directory=True)
    site_dirs = sorted(path.glob("lib/python*/site-packages"))
    if len(site_dirs) != 1:
        raise StepFailed("linking the worker runtime", [], None,
                         f"expected one site-packages folder in {path}, found {site_dirs}")
    site = site_dirs[0]
    # a relative line (site.py joins it to the site-packages folder): the path stays right
    # wherever the cache lives
    (site / PTH_FILE).write_text(os.path.relpath(runtime, site) + "\n")


def _tree_size(path: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
