"""PIE's protocol (pie-client 0.5.3) on corral: programs run as corral worker processes.

Host side: ``frames`` (the wire), ``manifest``, ``store`` (installed programs), ``forking``
(the fork server's host half), ``warm`` (ready workers per environment), ``processes``
(launched programs), ``endpoint`` (the Starlette WebSocket endpoint), ``standalone`` (a
minimal app for tests and benchmarks). Worker side, importable with msgspec alone: ``guest``
(runs one program), ``inferlet`` (the module programs import), ``zygote`` (the fork server).

This package's ``__init__`` imports nothing, so a worker can import its worker-side modules.
"""
