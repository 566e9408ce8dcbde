"""The two ways to make a virtualenv and install into it: uv, else ``venv`` + pip.

Each step is a subprocess whose output (stdout and stderr, merged in order) is streamed
line by line to a progress callback and kept, so a failure carries the installer's own
message. uv gets the user's pip configuration as flags (it reads no pip.conf, see
pipconfig.py); pip reads its configuration itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import EnvironmentBuildError
from .pipconfig import PipSettings, read_pip_settings

Progress = Callable[[str], None]

# Variables of the host's environment that would leak the host's packages into a step
# (PYTHONPATH entries count as installed for pip) or move the interpreter's prefix.
HOST_ONLY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


class StepFailed(Exception):
    """A build step failed; ``output`` is what it printed. ``returncode`` is None when
    the step's process did not start or exited 0 with a wrong result."""

    def __init__(self, what: str, argv: Sequence[str], returncode: int | None, output: str):
        self.what = what
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(f"{what} failed" + (f" (exit code {returncode})"
                                             if returncode is not None else ""))


def step_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the host-only variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in HOST_ONLY_VARIABLES}
    env.update(extra or {})
    return env


def run_step(what: str, argv: Sequence[str], *, cwd: str | os.PathLike,
             progress: Progress, extra_env: Mapping[str, str] | None = None) -> str:
    """Run one build step, passing each output line to ``progress``; its whole output, or
    StepFailed. Interrupted (Ctrl-C, an exception in ``progress``), it kills the step
    before re-raising: no installer outlives the build."""
    try:
        # Its own process group: an interrupted step is killed with whatever it started
        # (build backends of source packages), not just the installer itself.
        proc = subprocess.Popen(list(argv), cwd=cwd, env=step_environ(extra_env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                process_group=0)
    except OSError as exc:
        raise StepFailed(what, argv, None, f"cannot run {argv[0]}: {exc}") from exc
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            progress(line)
        returncode = proc.wait()
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    output = "\n".join(lines)
    if returncode != 0:
        raise StepFailed(what, argv, returncode, output)
    return output


class Installer:
    """Makes a virtualenv and installs a requirements file into it."""

    name = "installer"

    def create(self, python: str, path: Path, progress: Progress) -> None:
        raise NotImplementedError

    def install(self, env_python: str, requirements_file: Path, progress: Progress) -> None:
        raise NotImplementedError


class UvInstaller(Installer):
    """``uv venv`` and ``uv pip install``, with the user's pip configuration as flags."""

    name = "uv"

    def __init__(self, uv: str):
        self.uv = uv

    def create(self, python: str, path: Path, progress: Progress) -> None:
        # cwd: the cache, so that uv finds no project (pyproject.toml, uv.toml) of the
        # caller's current folder; the user's own uv.toml still counts.
        run_step("uv venv", [self.uv, "venv", "--no-project", "--color", "never",
                             "--python", python, str(path)],
                 cwd=path.parent, progress=progress)

    def install(self, env_python: str, requirements_file: Path, progress: Progress) -> None:
        settings = read_pip_settings()
        if settings != PipSettings():  # (which files were read does not count)
            progress(f"pip configuration for uv: {settings.describe()}")
        run_step("uv pip install",
                 [self.uv, "pip", "install", "--color", "never", "--python", env_python,
                  *settings.uv_args(), "-r", str(requirements_file)],
                 cwd=requirements_file.parent, progress=progress,
                 extra_env=settings.uv_env())


class PipInstaller(Installer):
    """``python -m venv`` and the new environment's own pip (which reads pip's
    configuration itself)."""

    name = "pip"

    def create(self, python: str, path: Path, progress: Progress) -> None:
        run_step("python -m venv", [python, "-m", "venv", str(path)], cwd=path.parent,
                 progress=progress)

    def install(self, env_python: str, requirements_file: Path, progress: Progress) -> None:
        run_step("pip install",
                 [env_python, "-m", "pip", "install", "--disable-pip-version-check",
                  "--no-input", "--progress-bar", "off", "-r", str(requirements_file)],
                 cwd=requirements_file.parent, progress=progress)


def find_uv() -> str | None:
    """The uv binary: the one the ``uv`` package ships, else one on PATH, else None."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def select_installer(name: str) -> Installer:
    """``"auto"`` (uv when installed, else pip), ``"uv"`` or ``"pip"``."""
    if name not in ("auto", "uv", "pip"):
        raise ValueError(f"installer must be 'auto', 'uv' or 'pip', not {name!r}")
    if name == "pip":
        return PipInstaller()
    uv = find_uv()
    if uv is not None:
        return UvInstaller(uv)
    if name == "uv":
        raise EnvironmentBuildError("installer='uv' but uv is not installed: "
                                    "pip install 'corral[plugins]' (or put uv on PATH)")
    return PipInstaller()
