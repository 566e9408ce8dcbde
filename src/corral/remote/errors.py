"""The errors of remote sessions, in corral's tree (corral/exceptions.py)::

    CorralError
     ├── HandshakeError .......... the server refused the connection: version, token, Host/Origin, capacity
     │    └── AuthenticationError  missing or wrong token
     ├── UploadError ............. a bundle was refused: limits, hash mismatch, chunk order, unsafe member
     ├── InstanceNotFound ........ no instance of yours has that id (also a KeyError)
     ├── LimitExceeded ........... a cap of the server: instances per client, connections
     ├── LaunchError ............. the server could not launch the instance (program, target, environment)
 ├── StreamOverflow .......... a stream was cancelled: its client read it too slowly
     └── WorkerError
          └── ConnectionLost ..... the connection to the server ended while the call was in flight
"""

from __future__ import annotations

from ..exceptions import CorralError, WorkerError

__all__ = ["HandshakeError", "AuthenticationError", "UploadError", "InstanceNotFound",
           "LimitExceeded", "LaunchError", "StreamOverflow", "ConnectionLost"]


class HandshakeError(CorralError):
    """Raised by ``corral.connect`` when the server refuses the session: another protocol
    version (both are named), a Host or Origin it does not serve, or it is full."""


class AuthenticationError(HandshakeError):
    """Raised by ``corral.connect`` when the token is missing or wrong."""


class UploadError(CorralError):
    """Raised when the server refuses a bundle: over a size limit, a chunk out of order or
    twice, a hash that does not match, or a member that is unsafe to extract."""


class InstanceNotFound(CorralError, KeyError):
    """Raised for an instance id that names nothing of this client's (an instance of
    another client answers exactly the same)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LimitExceeded(CorralError):
    """Raised when a request would pass one of the server's caps (instances per client)."""


class LaunchError(CorralError):
    """Raised when the server cannot launch an instance: unknown program, a target outside
    the bundle, an environment that fails to build."""


class StreamOverflow(CorralError):
    """Raised for a stream whose client granted no credit while more than the server's
    ``stream_buffer`` bytes of chunks waited: the call was cancelled on the server."""


class ConnectionLost(WorkerError):
    """Raised for every call in flight (and every later call) when the connection to the
    ``corral host`` ends: the server stopped or crashed, or the network broke."""
