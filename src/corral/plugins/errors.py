"""The errors of the plugin layer: they live in the one exception tree
(``corral.exceptions``, drawn there) and are importable from here too."""

from ..exceptions import (  # noqa: F401 - re-exported
    ConfigError,
    EnvironmentBuildError,
    EnvironmentInUse,
    InsufficientResources,
    ManifestError,
    PluginBusy,
    PluginError,
    PluginNotFound,
    PluginNotLoaded,
    RequirementsError,
)
