"""The errors of the plugin layer; every one is a ``corral.CorralError``."""

from typing import Any

from ..exceptions import CorralError, problems_text


class PluginError(CorralError):
    """Base class of the plugin layer's errors."""


class ManifestError(PluginError):
    """A plugin's manifest is missing, unreadable or invalid; ``source`` names the file and
    ``problems`` lists every problem found (``{"loc": [...], "msg": ...}``)."""

    def __init__(self, source: str, problems: list[dict[str, Any]]):
        self.source = source
        self.problems = problems
        super().__init__(f"invalid plugin manifest {source}: "
                         f"{problems_text(problems, '(manifest)')}")


class PluginNotFound(PluginError, KeyError):
    """No plugin of that name is known."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "plugin not found"


class PluginNotLoaded(PluginError):
    """The plugin is known but not loaded (never loaded, unloaded, or evicted to make room
    for another: the message says which)."""


class PluginBusy(PluginError):
    """The operation does not fit the plugin's state: uninstalling a loaded plugin, loading
    one already loaded with another config. The message says what to do instead."""


class EnvironmentBuildError(PluginError):
    """Building a plugin's environment failed; ``output`` holds the installer's own message.
    Nothing half-built is left in the cache."""

    def __init__(self, message: str, output: str = ""):
        self.output = output
        super().__init__(message + (f"\n{output.rstrip()}" if output else ""))


class EnvironmentInUse(PluginError):
    """An environment cannot be removed: a worker runs in it (held with
    ``EnvironmentCache.hold()``, by this process or another)."""


class ConfigError(PluginError, ValueError):
    """A plugin's config does not fit its ``setup()``: ``problems`` lists every unknown key,
    wrong type and missing required value (``{"loc": [...], "msg": ...}``). Nothing was
    started."""

    def __init__(self, plugin: str, problems: list[dict[str, Any]]):
        self.plugin = plugin
        self.problems = problems
        super().__init__(f"bad config for plugin {plugin!r}: "
                         f"{problems_text(problems, '(config)')}")


class InsufficientResources(PluginError):
    """Loading a plugin would need more memory or GPU memory than is free, counting what the
    loaded plugins hold. ``needed`` and ``free`` are in bytes per resource."""

    def __init__(self, message: str, needed: dict[str, int] | None = None,
                 free: dict[str, int] | None = None):
        self.needed = dict(needed or {})
        self.free = dict(free or {})
        super().__init__(message)


class RequirementsError(PluginError, ValueError):
    """A requirement list or requirements file is malformed: a line that is neither a
    requirement, a path/URL nor a known option, a missing or circular ``-r`` include.
    ``source`` names the file (or ``"<requirements>"`` for an inline list) and ``line`` the
    1-based line number where known."""

    def __init__(self, source: str, message: str, line: int | None = None):
        self.source = source
        self.line = line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
