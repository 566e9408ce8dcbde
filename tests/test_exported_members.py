"""``corral.__all__`` is what users need, as httpx tests its own (issue 13): every name
in it resolves, nothing else is in it, and the names left out stay importable."""

import importlib

import corral

PUBLIC = {
    "__version__", "Worker", "Pool", "PluginManager", "Runner", "Restart", "Pipeline", "current",
    "File",
    "empty", "zeros",
    "CorralError", "InvalidState", "MethodNotFound", "ArgumentError", "RemoteError",
    "Cancelled", "CallTimeout", "QueueFull", "StreamInputError", "WorkerError", "WorkerStartupError",
    "SetupError", "WorkerCrashed", "WorkerStopped", "WorkerUnavailable", "ProtocolError",
    "UndecodableValue", "PluginError", "ManifestError", "PluginNotFound", "PluginNotLoaded",
    "PluginBusy", "EnvironmentBuildError", "EnvironmentInUse", "ConfigError",
    "InsufficientResources", "RequirementsError",
}

#: Not in __all__, still reachable: from corral and from their own modules.
REACHABLE = {
    "Log": "corral.protocol.messages", "Chunk": "corral.protocol.messages",
    "Done": "corral.protocol.messages", "Progress": "corral.protocol.messages",
    "Metric": "corral.protocol.messages", "MethodInfo": "corral.protocol.messages",
    "CallFuture": "corral.host.calls", "CallStream": "corral.host.calls",
    "AsyncCallFuture": "corral.host.calls", "AsyncCallStream": "corral.host.calls",
    "PoolFuture": "corral.host.pool", "AsyncPoolFuture": "corral.host.pool",
    "PoolHealth": "corral.host.pool", "PoolStats": "corral.host.pool",
    "Health": "corral.host.worker", "Stats": "corral.host.worker",
    "CallOptions": "corral.host.caller", "Crash": "corral.host.supervisor",
    "Scope": "corral.worker.scope",
}


def test_all_holds_exactly_the_public_names():
    assert set(corral.__all__) == PUBLIC
    assert len(corral.__all__) == len(PUBLIC)  # no duplicates


def test_every_public_name_resolves():
    for name in corral.__all__:
        assert getattr(corral, name) is not None, name


def test_names_left_out_stay_importable_from_corral_and_their_modules():
    for name, module in REACHABLE.items():
        assert name not in corral.__all__
        assert getattr(corral, name) is getattr(importlib.import_module(module), name)


def test_the_plugin_manager_and_the_runner_interface_are_reachable_from_corral():
    from corral.host.caller import Runner
    from corral.plugins.manager import PluginManager

    assert corral.PluginManager is PluginManager
    assert corral.Runner is Runner
    assert issubclass(corral.ManifestError, corral.PluginError)
    assert issubclass(corral.PluginError, corral.CorralError)
