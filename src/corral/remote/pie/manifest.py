"""A PIE program's manifest TOML: ``[package]``, ``[runtime]``, ``[parameters]``,
``[dependencies]``, checked with every problem named at once.

``[dependencies]`` maps a package to a version: ``"1.2.3"`` means ``==1.2.3``, a version with
its own operator (``">=1,<2"``, ``"~=1.4"``) is used as written, ``"*"`` or ``""`` means any
version. corral builds one environment per dependency set (corral.plugins.envs).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import msgspec

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$")
PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?$")
SPEC = re.compile(r"^[A-Za-z0-9<>=!~.*,+ _-]*$")
RUNTIME_KEYS = {"core", "language", "entry", "call"}


class InvalidManifest(ValueError):
    """The manifest is not valid TOML or not a runnable Python program's manifest."""


class Manifest(msgspec.Struct, frozen=True):
    name: str
    version: str
    entry: str
    call: str  # "kwargs" or "input"
    description: str | None
    parameters: dict[str, Any]
    dependencies: tuple[str, ...]  # requirement lines, sorted

    @property
    def program(self) -> str:
        return f"{self.name}@{self.version}"


def parse(text: str) -> Manifest:
    """The manifest in ``text``, or InvalidManifest listing what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidManifest(f"not TOML: {exc}") from None
    problems: list[str] = []
    package = _table(doc, "package", problems)
    runtime = _table(doc, "runtime", problems)
    parameters = _table(doc, "parameters", problems)
    deps = _table(doc, "dependencies", problems)
    name, version = package.get("name"), package.get("version")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"[package] name must be a name of letters, digits, '.', '_' or '-', "
                        f"not {name!r}")
    if not isinstance(version, str) or not VERSION.match(version):
        problems.append(f"[package] version must be a version like 1.2.3, not {version!r}")
    unknown = sorted(set(runtime) - RUNTIME_KEYS)
    if unknown:
        problems.append(f"[runtime] has unknown keys: {', '.join(unknown)}")
    language = runtime.get("language")
    if language is None:
        problems.append("[runtime] language is missing: corral runs Python programs "
                        "(language = \"python\"), not wasm components")
    elif language != "python":
        problems.append(f"[runtime] language {language!r} is not supported: corral runs "
                        "language = \"python\"")
    entry = runtime.get("entry", "main")
    if not isinstance(entry, str) or not entry.isidentifier():
        problems.append(f"[runtime] entry must be a function name, not {entry!r}")
    call = runtime.get("call", "input")
    if call not in ("input", "kwargs"):
        problems.append(f"[runtime] call must be \"input\" or \"kwargs\", not {call!r}")
    requirements = []
    for pkg, spec in deps.items():
        if not PACKAGE.match(pkg):
            problems.append(f"[dependencies] {pkg!r} is not a package name")
            continue
        if not isinstance(spec, str) or not SPEC.match(spec):
            problems.append(f"[dependencies] {pkg} must map to a version string, not {spec!r}")
            continue
        spec = spec.strip()
        if spec in ("", "*"):
            requirements.append(pkg)
        elif spec[0] in "<>=!~":
            requirements.append(pkg + spec)
        else:
            requirements.append(f"{pkg}=={spec}")
    description = package.get("description")
    if description is not None and not isinstance(description, str):
        problems.append("[package] description must be a string")
    if problems:
        raise InvalidManifest("; ".join(problems))
    return Manifest(name, version, entry, call, description, parameters,
                    tuple(sorted(requirements)))


def _table(doc: dict, key: str, problems: list[str]) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"[{key}] must be a table")
        return {}
    return value
