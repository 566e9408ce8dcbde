"""A plugin's manifest: ``corral.toml``, or ``[tool.corral]`` in ``pyproject.toml``.

::

    name = "echo"                       # letters, digits, . _ -
    version = "1.0"
    target = "echo.py:Echo"             # relative to the plugin folder, or "module:Class"
    requirements = ["numpy>=2"]         # or requirements = "requirements.txt" (relative)
    slots = 1                           # calls the worker runs at once
    env = { HF_HUB_OFFLINE = "1" }      # environment variables of the worker

    [resources]
    memory = "2GiB"                     # bytes: an int, or "512MB", "2GiB", "1.5GB"
    gpus = 1
    gpu_memory = "6GiB"

In ``pyproject.toml`` the same keys sit under ``[tool.corral]`` (resources under
``[tool.corral.resources]``); ``name`` and ``version`` default to ``[project]``'s.

Every problem is found in one pass and reported together in one ManifestError (unknown
keys, wrong types, bad sizes, a missing requirements file), each with where it sat
(``resources.memory``). msgspec does the type checks, field by field, so that one bad
field does not hide the next.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from typing import Annotated, Any

import msgspec

from ..worker.inputs import split_validation_error
from .errors import ManifestError

MANIFEST_FILE = "corral.toml"
PYPROJECT_FILE = "pyproject.toml"

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class Resources(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What a loaded plugin needs: ``memory`` and ``gpu_memory`` in bytes, ``gpus`` a
    count. 0 means "not declared": nothing is reserved or checked for it."""

    memory: NonNegative = 0
    gpus: NonNegative = 0
    gpu_memory: NonNegative = 0


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A checked manifest. ``requirements`` is the inline list, or the path of a
    requirements file (absolute, already known to exist) when given as a string."""

    name: Name
    target: str
    version: str = "0"
    requirements: list[str] | str = []
    resources: Resources = Resources()
    slots: Annotated[int, msgspec.Meta(ge=1)] = 1
    env: dict[str, str] = {}
    description: str = ""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like ``"512MB"``, ``"2GiB"``, ``"1.5 GB"`` (KB/MB/GB/TB
    are powers of 1000, KiB/MiB/GiB/TiB of 1024). Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size (bytes, or a string like '2GiB'), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value})")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
        raise ValueError(f"cannot read {value!r} as a size: use bytes or a number with one "
                         "of the units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
    raise ValueError(f"expected a size (bytes, or a string like '2GiB'), "
                     f"got {type(value).__name__}")


def format_size(n: int) -> str:
    """``2147483648`` -> ``"2.0 GiB"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def read_manifest(folder: str, defaults: dict[str, Any] | None = None) -> Manifest:
    """The manifest of the plugin folder ``folder``: its ``corral.toml``, else the
    ``[tool.corral]`` table of its ``pyproject.toml``; ``defaults`` fill keys it leaves
    out. Raises ManifestError listing every problem (also when the folder has neither)."""
    path = os.path.join(folder, MANIFEST_FILE)
    if os.path.isfile(path):
        doc = _load_toml(path)
        return parse_manifest({**(defaults or {}), **doc}, folder, path)
    pyproject = os.path.join(folder, PYPROJECT_FILE)
    if os.path.isfile(pyproject):
        doc = _load_toml(pyproject)
        table = doc.get("tool", {}).get("corral") if isinstance(doc.get("tool"), dict) else None
        if not isinstance(table, dict):
            raise ManifestError(pyproject, [{"loc": ["tool", "corral"],
                                             "msg": "no [tool.corral] table"}])
        project = doc.get("project") if isinstance(doc.get("project"), dict) else {}
        data = dict(table)
        for key in ("name", "version"):  # the project's own, unless the table says otherwise
            if key not in data and isinstance(project.get(key), str):
                data[key] = project[key]
        data = {**(defaults or {}), **data}
        return parse_manifest(data, folder, pyproject, prefix=["tool", "corral"])
    raise ManifestError(folder, [{"loc": [], "msg": f"no {MANIFEST_FILE}, and no "
                                                   f"{PYPROJECT_FILE} with [tool.corral]"}])


def has_manifest(folder: str) -> bool:
    """Whether ``folder`` holds a manifest file (not whether it is valid)."""
    if os.path.isfile(os.path.join(folder, MANIFEST_FILE)):
        return True
    pyproject = os.path.join(folder, PYPROJECT_FILE)
    if not os.path.isfile(pyproject):
        return False
    try:
        with open(pyproject, "rb") as f:
            tool = tomllib.load(f).get("tool")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # some other project's broken file: not a plugin
    return isinstance(tool, dict) and "corral" in tool


def parse_manifest(data: Any, folder: str, source: str,
                   prefix: list[Any] | None = None) -> Manifest:
    """Check ``data`` (a manifest's table) and build the Manifest; ``folder`` resolves a
    requirements file, ``source`` names the file in errors, ``prefix`` starts every
    problem's location (``["tool", "corral"]`` in a pyproject.toml)."""
    prefix = list(prefix or [])
    if not isinstance(data, dict):
        raise ManifestError(source, [{"loc": prefix, "msg": "expected a table"}])
    problems: list[dict[str, Any]] = []
    data = dict(data)
    resources = data.get("resources")
    if isinstance(resources, dict):
        resources = dict(resources)
        for key in ("memory", "gpu_memory"):
            if key in resources:
                try:
                    resources[key] = parse_size(resources[key])
                except ValueError as exc:
                    problems.append({"loc": [*prefix, "resources", key], "msg": str(exc)})
                    del resources[key]
        data["resources"] = resources
    problems += _field_problems(data, Manifest, prefix)
    target = data.get("target")
    if isinstance(target, str) and not _valid_target(target):
        problems.append({"loc": [*prefix, "target"],
                         "msg": f"{target!r} must look like 'file.py:Class' (relative to the "
                                "plugin folder) or 'package.module:Class'"})
    elif isinstance(target, str) and _is_file_target(target) \
            and not inside(folder, target.rpartition(":")[0]):
        problems.append({"loc": [*prefix, "target"],
                         "msg": f"the target file {target.rpartition(':')[0]!r} is outside "
                                "the plugin folder"})
    reqs = data.get("requirements")
    if isinstance(reqs, str):
        path = os.path.normpath(os.path.join(folder, reqs))
        # Resolved (symlinks too) and kept inside the folder: a manifest must not make the
        # host read, and then quote in an error, a file of its choosing.
        if not inside(folder, reqs):
            problems.append({"loc": [*prefix, "requirements"],
                             "msg": f"requirements file {reqs!r} is outside the plugin "
                                    "folder"})
        elif not os.path.isfile(path):
            problems.append({"loc": [*prefix, "requirements"],
                             "msg": f"requirements file {reqs!r} not found in {folder}"})
        data["requirements"] = path
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            problems.append({"loc": [*prefix, "env", key],
                             "msg": "not a valid environment variable name"})
        elif isinstance(value, str) and "\0" in value:  # execve() would fail on it later
            problems.append({"loc": [*prefix, "env", key],
                             "msg": "an environment variable's value cannot hold a NUL "
                                    "character"})
    if problems:
        raise ManifestError(source, problems)
    return msgspec.convert(data, Manifest)


def inside(folder: str, path: str) -> bool:
    """Whether ``path`` (relative to ``folder``, or absolute) resolves, symlinks followed,
    to ``folder`` itself or somewhere under it."""
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(folder, path))
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _is_file_target(target: str) -> bool:
    """A ``file.py:Class`` target (a path), rather than ``package.module:Class``."""
    module = target.rpartition(":")[0]
    return module.endswith(".py") or "/" in module or os.sep in module


def _valid_target(target: str) -> bool:
    module, sep, attr = target.rpartition(":")
    return bool(sep and module.strip() and attr.strip())


def _field_problems(data: dict[str, Any], struct: type, prefix: list[Any]) -> list[dict]:
    """Every unknown, missing and ill-typed field of ``data`` against ``struct``, checked
    one field at a time (msgspec stops at the first problem of a whole document)."""
    problems: list[dict[str, Any]] = []
    info = msgspec.inspect.type_info(struct)
    fields = {f.name: f for f in info.fields}
    for key in data:
        if key not in fields:
            problems.append({"loc": [*prefix, key],
                             "msg": f"unknown key (known: {', '.join(sorted(fields))})"})
    types = typing.get_type_hints(struct, include_extras=True)
    for name, field in fields.items():
        if name not in data:
            if field.required:
                problems.append({"loc": [*prefix, name], "msg": "required key is missing"})
            continue
        hint = types[name]
        if isinstance(data[name], dict) and isinstance(hint, type) \
                and issubclass(hint, msgspec.Struct):
            problems += _field_problems(data[name], hint, [*prefix, name])
            continue
        if isinstance(data[name], dict) and typing.get_origin(hint) is dict:
            items = [([*prefix, name, key], value, typing.get_args(hint)[1])
                     for key, value in data[name].items()]  # each value, by its key
        else:
            items = [([*prefix, name], data[name], hint)]
        for loc, value, of in items:
            try:
                msgspec.convert(value, of)
            except msgspec.ValidationError as exc:
                where, msg = split_validation_error(str(exc))
                problems.append({"loc": loc + where, "msg": msg})
    return problems


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(path, [{"loc": [], "msg": f"not valid TOML: {exc}"}]) from None
    except UnicodeDecodeError as exc:  # (tomllib decodes before it parses)
        raise ManifestError(path, [{"loc": [], "msg": f"not valid TOML: not UTF-8 ({exc})"}]) \
            from None
    except OSError as exc:
        raise ManifestError(path, [{"loc": [], "msg": f"cannot read: {exc.strerror or exc}"}]) \
            from None
