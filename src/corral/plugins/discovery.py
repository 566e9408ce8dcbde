"""Find plugins: folders on a search path, and installed distributions.

**Folders.** Each entry of the search path is either a plugin folder (it holds a
``corral.toml``, or a ``pyproject.toml`` with ``[tool.corral]``) or a folder of plugin
folders (each subfolder with a manifest is a plugin). The plugins directory (default
``$CORRAL_PLUGINS_DIR``, else ``$XDG_DATA_HOME/corral/plugins``, else
``~/.local/share/corral/plugins``) is a folder of plugin folders searched after the
explicit paths.

**Distributions.** An installed distribution exposes plugins in the entry point group
``corral.plugins``; the entry point's name is the plugin's name, and its value is one of:

* ``package`` or ``package.sub`` (no colon): the package directory that holds the
  manifest. It is located without importing anything (only the package's files are read),
  and the manifest's ``name`` must be the entry point's; ``version`` defaults to the
  distribution's. Example, in the distribution's pyproject.toml::

      [project.entry-points."corral.plugins"]
      sentiment = "sentiment_plugin"      # sentiment_plugin/corral.toml

* ``package.module:Class`` (a colon): the target itself. The plugin has no requirements of
  its own (the distribution is installed, its dependencies with it) and runs on the host's
  interpreter; its version is the distribution's; it declares no resources.

The first plugin found under a name wins (explicit paths, then the plugins directory, then
entry points); later ones, and manifests that fail to read, are reported in
``Discovered.problems`` without hiding the others.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import ManifestError
from .manifest import Manifest, Resources, has_manifest, parse_manifest, read_manifest

ENTRY_POINT_GROUP = "corral.plugins"


def default_plugins_dir() -> str:
    """``$CORRAL_PLUGINS_DIR``, else ``$XDG_DATA_HOME/corral/plugins``, else
    ``~/.local/share/corral/plugins``."""
    explicit = os.environ.get("CORRAL_PLUGINS_DIR")
    if explicit:
        return explicit
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(data, "corral", "plugins")


@dataclass(frozen=True)
class Plugin:
    """A plugin found by discovery: its manifest and where it came from.

    ``folder`` is the plugin folder (None for an entry point naming its target);
    ``source`` names where it was found (a manifest file, or the entry point);
    ``pythonpath`` are directories the worker must be able to import from.
    """

    manifest: Manifest
    folder: str | None
    source: str
    pythonpath: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def resources(self) -> Resources:
        return self.manifest.resources

    @property
    def target(self) -> str:
        """The reference a Worker loads: a file target made absolute against the folder."""
        module, _, attr = self.manifest.target.rpartition(":")
        if self.folder is not None and (module.endswith(".py") or "/" in module) \
                and not os.path.isabs(module):
            module = os.path.normpath(os.path.join(self.folder, module))
        return f"{module}:{attr}"

    @property
    def requirements_file(self) -> str | None:
        reqs = self.manifest.requirements
        return reqs if isinstance(reqs, str) else None

    def requirements(self) -> list[str]:
        """The requirement lines: the inline list, or the requirements file read by the
        environment layer (the same reader that builds the environment). Relative paths
        in either are relative to the plugin (the folder, or the file), never to the
        host's current folder."""
        reqs = self.manifest.requirements
        if isinstance(reqs, str):
            from .envs import read_requirements

            return list(read_requirements(reqs, root=self.folder))
        if self.folder is None or not reqs:
            return list(reqs)
        from .requirements import normalize_requirements

        return list(normalize_requirements(reqs, base_dir=self.folder))


@dataclass
class Discovered:
    """What a search found: plugins by name, and the problems met on the way."""

    plugins: dict[str, Plugin] = field(default_factory=dict)
    problems: list[ManifestError] = field(default_factory=list)

    def _add(self, plugin: Plugin) -> None:
        first = self.plugins.get(plugin.name)
        if first is None:
            self.plugins[plugin.name] = plugin
        else:
            self.problems.append(ManifestError(plugin.source, [{
                "loc": ["name"], "msg": f"plugin {plugin.name!r} is also at {first.source}, "
                                        "which comes first on the search path: this one is "
                                        "ignored"}]))


def discover(paths: Iterable[str] = (), plugins_dir: str | None = None,
             entry_points: bool = True) -> Discovered:
    """Search ``paths`` (plugin folders, or folders of them), then ``plugins_dir``
    (default: ``default_plugins_dir()``; it need not exist), then, with ``entry_points``,
    the installed distributions."""
    found = Discovered()
    for path in paths:
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(path):
            found.problems.append(ManifestError(path, [{"loc": [],
                                                        "msg": "no such directory"}]))
        elif has_manifest(path):
            _from_folder(found, path)
        else:
            _from_parent(found, path)
    parent = os.path.abspath(os.path.expanduser(plugins_dir or default_plugins_dir()))
    if os.path.isdir(parent):
        _from_parent(found, parent)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _from_entry_point(found, ep)
    return found


def _from_parent(found: Discovered, parent: str) -> None:
    try:
        names = sorted(os.listdir(parent))
    except OSError as exc:
        found.problems.append(ManifestError(parent, [{"loc": [], "msg": str(exc)}]))
        return
    for name in names:
        folder = os.path.join(parent, name)
        if not name.startswith(".") and os.path.isdir(folder) and has_manifest(folder):
            _from_folder(found, folder)


def _from_folder(found: Discovered, folder: str, defaults: dict[str, Any] | None = None,
                 expect_name: str | None = None, source: str | None = None) -> None:
    try:
        manifest = read_manifest(folder, defaults)
    except ManifestError as exc:
        found.problems.append(exc)
        return
    where = source or _manifest_file(folder)
    if expect_name is not None and manifest.name != expect_name:
        found.problems.append(ManifestError(where, [{
            "loc": ["name"], "msg": f"the manifest names {manifest.name!r} but the entry "
                                    f"point is {expect_name!r}: they must be the same"}]))
        return
    found._add(Plugin(manifest, folder, where, (folder,)))


def _manifest_file(folder: str) -> str:
    path = os.path.join(folder, "corral.toml")
    return path if os.path.isfile(path) else os.path.join(folder, "pyproject.toml")


def _from_entry_point(found: Discovered, ep: importlib.metadata.EntryPoint) -> None:
    dist = ep.dist
    dist_name = dist.metadata["Name"] if dist is not None else "?"
    version = dist.version if dist is not None else "0"
    source = f"entry point {ep.name} = {ep.value!r} of {dist_name} {version}"
    if ":" in ep.value:
        # The target itself: importable wherever the distribution is.
        root = str(dist.locate_file("")) if dist is not None else None
        try:
            manifest = parse_manifest({"name": ep.name, "version": version,
                                       "target": ep.value.replace(" ", "")}, os.getcwd(),
                                      source)
        except ManifestError as exc:
            found.problems.append(exc)
            return
        found._add(Plugin(manifest, None, source, (root,) if root else ()))
        return
    folder = _package_dir(ep.value)
    if folder is None:
        found.problems.append(ManifestError(source, [{
            "loc": [], "msg": f"no package directory {ep.value!r} is installed (the entry "
                              "point must name a package holding corral.toml, or a "
                              "'module:Class' target)"}]))
        return
    _from_folder(found, folder, {"version": version}, expect_name=ep.name,
                 source=f"{source} ({_manifest_file(folder)})")


def _package_dir(dotted: str) -> str | None:
    """The directory of package ``dotted``, found without importing it (a top-level
    package's spec is read from the path; subpackages are directories below it)."""
    top, *rest = dotted.strip().split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, *rest)
        if os.path.isdir(folder):
            return folder
    return None
