"""A Cog project on the host side: cog.yaml, the environment it asks for, and
``@concurrent(max=N)`` read from the source (host only: the worker never imports this).

``CogProject.load(path)`` reads ``predict``, ``train``, ``concurrency.max``,
``build.python_version``, ``build.python_packages``, ``build.python_requirements`` and
``environment``. What needs a container build (``system_packages``, ``gpu``, ``cuda``,
``run``, ``cudnn``) is not done: ``unsupported`` says, once each, what to provide instead.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from ..plugins.requirements import read_requirements, requirement_names

#: The cog SDK a project's environment gets when its requirements do not name cog (Cog's
#: build installs it itself, so cog.yaml never lists it): the version corral is tested with.
COG_REQUIREMENT = "cog==0.23.1"

#: cog.yaml build keys corral cannot honour, and what the user provides instead.
UNSUPPORTED = {
    "system_packages": "install them on this machine (apt-get install ...)",
    "gpu": "corral uses the GPUs this machine has; nothing to set",
    "cuda": "install the CUDA build of your packages (e.g. a torch wheel for your CUDA)",
    "cudnn": "install cuDNN on this machine",
    "run": "run those commands on this machine before serving",
}
KNOWN_TOP = {"build", "predict", "train", "concurrency", "environment", "image", "weights",
             "tests"}


class CogConfigError(ValueError):
    """cog.yaml cannot be used: ``str()`` names the file and the key."""


@dataclass
class CogProject:
    root: str  # the folder of cog.yaml
    predict: str | None = None
    train: str | None = None
    concurrency: int | None = None
    python_version: str | None = None
    packages: list[str] = field(default_factory=list)
    requirements_file: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)

    @classmethod
    def find(cls, target: str) -> "CogProject | None":
        """The project ``target`` names (a cog.yaml, or a folder holding one), else None."""
        path = target if target.endswith((".yaml", ".yml")) else os.path.join(target, "cog.yaml")
        if ":" in target and not os.path.exists(path):
            return None
        return cls.load(path) if os.path.isfile(path) else None

    @classmethod
    def load(cls, path: str) -> "CogProject":
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CogConfigError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise CogConfigError(f"{path}: expected a mapping at the top")
        project = cls(root=os.path.dirname(os.path.abspath(path)))
        where = os.path.basename(path)
        for key in ("predict", "train"):
            value = data.get(key)
            if value is not None and not (isinstance(value, str) and ":" in value):
                raise CogConfigError(f"{where}: {key} must look like 'predict.py:Predictor', "
                                     f"not {value!r}")
            setattr(project, key, value)
        conc = data.get("concurrency") or {}
        if not isinstance(conc, dict) or not isinstance(conc.get("max", 1), int) \
                or isinstance(conc.get("max", 1), bool) or conc.get("max", 1) < 1:
            raise CogConfigError(f"{where}: concurrency.max must be a positive integer")
        project.concurrency = conc.get("max")
        build = data.get("build") or {}
        if not isinstance(build, dict):
            raise CogConfigError(f"{where}: build must be a mapping")
        version = build.get("python_version")
        project.python_version = None if version is None else str(version)
        packages = build.get("python_packages") or []
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise CogConfigError(f"{where}: build.python_packages must be a list of strings")
        project.packages = list(packages)
        reqs = build.get("python_requirements")
        if reqs is not None:
            project.requirements_file = os.path.join(project.root, str(reqs))
        env = data.get("environment") or []
        if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
            raise CogConfigError(f"{where}: environment must be a list of 'NAME=value'")
        project.environment = dict(e.split("=", 1) for e in env)
        for key, instead in UNSUPPORTED.items():
            if build.get(key) not in (None, False, [], ""):
                project.unsupported.append(f"build.{key} is not applied by corral: {instead}")
        for key in sorted(set(data) - KNOWN_TOP):
            project.unsupported.append(f"{key} is not a cog.yaml key corral knows: ignored")
        return project

    def target(self, train: bool = False) -> str:
        """The reference to serve, with its file made absolute."""
        ref = self.train if train else self.predict
        if ref is None:
            raise CogConfigError(f"cog.yaml in {self.root} has no {'train' if train else 'predict'}"
                                 " entry")
        file, _, name = ref.rpartition(":")
        return f"{os.path.join(self.root, file)}:{name}"

    def requirements(self) -> list[str]:
        """``python_packages``, the lines of ``python_requirements``, and the cog SDK
        (``COG_REQUIREMENT``) unless they name it."""
        lines = list(self.packages)
        if self.requirements_file is not None:
            lines += read_requirements(self.requirements_file)
        if "cog" not in requirement_names(lines):
            lines.append(COG_REQUIREMENT)
        return lines

    def python(self) -> str | None:
        """An interpreter of ``python_version`` (this one if it matches, else
        ``pythonX.Y`` on PATH); None when none is found (the caller says so)."""
        if self.python_version is None:
            return None
        want = self.python_version
        have = f"{sys.version_info.major}.{sys.version_info.minor}"
        if have == want or f"{have}." in want + ".":
            return sys.executable
        return shutil.which(f"python{want}")


def concurrent_max(ref: str) -> int | None:
    """``N`` of ``@concurrent(max=N)`` (or ``@cog.concurrent(max=N)``) on the method the
    reference serves (``run``, else ``predict``, of a class; or the function itself), read
    from the source as Cog's build reads it; None when there is none or it is not a
    literal. The host knows the slots before the worker starts."""
    file, _, name = ref.rpartition(":")
    if not file.endswith(".py") or not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            tree = ast.parse(f.read(), file)
    except (OSError, SyntaxError, ValueError):
        return None
    node = next((n for n in tree.body if getattr(n, "name", None) == name.split(".")[0]), None)
    if isinstance(node, ast.ClassDef):
        methods = {n.name: n for n in node.body
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        node = methods.get("run") or methods.get("predict")
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and _name(deco.func) == "concurrent":
            for kw in deco.keywords:
                if kw.arg == "max" and isinstance(kw.value, ast.Constant) \
                        and isinstance(kw.value.value, int):
                    return kw.value.value
    return None


def _name(node: Any) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None
