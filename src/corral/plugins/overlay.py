"""Run corral's worker on an interpreter that has never heard of corral.

``runtime_overlay(python)`` gives the variables for ``Worker(python=python, env=...)``:
``PYTHONPATH`` set to a folder holding a link ``corral -> <the host's corral package>`` (as
an environment of envs.py has one) and, when the interpreter lacks msgspec, msgspec
installed there for that interpreter (``uv pip install --target``, else pip). The
interpreter's own site-packages are untouched and still seen: a venv that has cog, torch
and the model's packages is used as it is. The folder is built once per interpreter
(its real path and version), host corral folder and msgspec version, under the
environment cache's root (``overlays/``), atomically (built aside, renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from .envs import _host_runtime, _identify, default_root
from .errors import EnvironmentBuildError
from .installers import StepFailed, find_uv, run_step

OVERLAYS_DIR = "overlays"


def runtime_overlay(python: str, root: str | os.PathLike | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """``{"PYTHONPATH": <overlay>}`` for a worker on ``python``; see the module docstring.
    Raises EnvironmentBuildError when the interpreter does not run or msgspec cannot be
    installed for it."""
    report = progress or (lambda line: None)
    interp = _identify(python)
    corral_dir, _, msgspec_version = _host_runtime()
    has_msgspec = _imports(interp.executable, "msgspec")
    key = hashlib.sha256(json.dumps([interp.real_path, interp.version, corral_dir,
                                     msgspec_version, has_msgspec]).encode()).hexdigest()[:24]
    base = Path(root) if root is not None else default_root()
    path = base / OVERLAYS_DIR / key
    if not (path / "corral").exists():
        report(f"linking corral into {interp.executable} (overlay {key})")
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=path.parent))
        try:
            (work / "corral").symlink_to(corral_dir, target_is_directory=True)
            if not has_msgspec:
                _install_msgspec(interp.executable, work, msgspec_version, report)
            try:
                os.rename(work, path)
            except OSError:  # another process made it meanwhile
                if not (path / "corral").exists():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {"PYTHONPATH": str(path), "PYTHONHOME": ""}


def _imports(python: str, module: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentBuildError(f"cannot run the interpreter {python!r}", str(exc)) from exc


def _install_msgspec(python: str, target: Path, version: str,
                     report: Callable[[str], None]) -> None:
    uv = find_uv()
    spec = f"msgspec=={version}"
    argv = [uv, "pip", "install", "--color", "never", "--python", python, "--target",
            str(target), spec] if uv else \
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
         "--target", str(target), spec]
    try:
        run_step("installing msgspec for the interpreter", argv, cwd=target, progress=report)
    except StepFailed as exc:
        raise EnvironmentBuildError(f"cannot install {spec} for {python}", exc.output) from None
