"""Plugins: a folder or an installed distribution with a manifest, run in its own
environment by a worker (``corral.plugins.manager.PluginManager``).

Layout: ``manifest.py`` reads and checks manifests, ``discovery.py`` finds plugins,
``envs.py`` builds and caches one virtualenv per requirement set, ``manager.py`` loads,
calls, reloads and unloads them, ``resources.py`` accounts memory and GPU memory.
"""
