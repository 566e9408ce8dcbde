"""Protocol version and the handshake check."""

from __future__ import annotations

from .._version import __version__

#: Bump on any incompatible change to protocol.messages or protocol.values.
PROTOCOL_VERSION = 2


def check_hello(protocol: int, corral_version: str) -> str | None:
    """Return why a worker's Hello is unacceptable, or None when it fits this host."""
    if protocol != PROTOCOL_VERSION:
        return (
            f"protocol version mismatch: host speaks {PROTOCOL_VERSION} (corral {__version__}), "
            f"worker speaks {protocol} (corral {corral_version}); install the same corral "
            f"version in the worker's environment"
        )
    return None
