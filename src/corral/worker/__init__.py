"""The worker side: the process that hosts one target.

Importable with the stdlib and msgspec alone (numpy only when a value needs it), because it
runs inside each plugin's own environment. Nothing here imports the host side.
"""
