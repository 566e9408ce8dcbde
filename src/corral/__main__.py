"""``python -m corral``: the ``corral`` command (see corral.cli)."""

from .cli import main

main()
