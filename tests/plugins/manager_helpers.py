"""Plugin folders written into a test's tmp_path, and a stand-in environment cache.

``Tool`` is the target of most test plugins: a typed ``setup()``, a plain method, a
generator, a slow method (to be busy), and ``get_state()``.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading

TOOL = textwrap.dedent('''
    import os
    import sys
    import time


    class Tool:
        def setup(self, size: int, label: str = "tool", ratio: float = 1.0):
            self.size, self.label, self.ratio = size, label, ratio

        def describe(self) -> dict:
            return {"size": self.size, "label": self.label, "ratio": self.ratio,
                    "pid": os.getpid(), "python": sys.executable,
                    "env": os.environ.get("TOOL_ENV"),
                    "test_env": os.environ.get("CORRAL_TEST_ENV")}

        def echo(self, x):
            return x

        def count(self, n: int):
            yield from range(n)

        def wait(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        def get_state(self) -> dict:
            return {"label": self.label}
''')


def make_plugin(parent, name: str, *, manifest: str = "", target: str = "tool.py:Tool",
                code: str = TOOL, file: str = "tool.py") -> str:
    """Write plugin folder ``parent/name`` with a corral.toml and its code; returns it."""
    folder = os.path.join(str(parent), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, file), "w") as f:
        f.write(code)
    with open(os.path.join(folder, "corral.toml"), "w") as f:
        f.write(f'name = "{name}"\nversion = "1.0"\ntarget = "{target}"\n'
                + textwrap.dedent(manifest))
    return folder


class Env:
    def __init__(self, key: str, path: str, python: str):
        self.key, self.path, self.python = key, path, python


class HostEnvironments:
    """A stand-in for the environment layer (corral.plugins.envs) with its interface: an
    "environment" is a folder whose ``bin/python`` runs this interpreter with
    ``CORRAL_TEST_ENV`` set to the environment's key, so a worker started on it is a real
    process that can tell which environment it runs in. A requirement containing
    ``no-such-package`` fails to build, with an installer-like message."""

    def __init__(self, root):
        self.root = str(root)
        self.built: list[tuple[str, ...]] = []
        self.gate: threading.Event | None = None  # set: builds wait for it

    def key(self, requirements) -> str:
        return "env-" + "-".join(sorted(r.replace(">", "").replace("=", "")
                                        for r in requirements))

    def get(self, requirements):
        key = self.key(requirements)
        python = os.path.join(self.root, key, "bin", "python")
        return Env(key, os.path.join(self.root, key), python) \
            if os.path.exists(python) else None

    def ensure(self, requirements, *, progress=None):
        from corral.plugins.errors import EnvironmentBuildError

        if self.gate is not None:
            self.gate.wait(10)
        if progress is not None:
            progress(f"resolving {len(requirements)} requirement(s)")
        if any("no-such-package" in r for r in requirements):
            raise EnvironmentBuildError(
                "building the environment failed",
                "ERROR: No matching distribution found for no-such-package")
        found = self.get(requirements)
        if found is not None:
            return found
        key = self.key(requirements)
        os.makedirs(os.path.join(self.root, key, "bin"))
        python = os.path.join(self.root, key, "bin", "python")
        with open(python, "w") as f:
            f.write(f'#!/bin/sh\nCORRAL_TEST_ENV={key} exec {sys.executable} "$@"\n')
        os.chmod(python, 0o755)
        self.built.append(tuple(requirements))
        if progress is not None:
            progress("installed")
        return self.get(requirements)

    def list(self):
        return [Env(k, os.path.join(self.root, k), os.path.join(self.root, k, "bin", "python"))
                for k in sorted(os.listdir(self.root))]

    def remove(self, key: str) -> None:
        import shutil

        shutil.rmtree(os.path.join(self.root, key))
