"""The native protocol of ``corral host``: msgspec Structs over one WebSocket.

Every WebSocket message is binary. A *message frame* is msgpack of one Struct of the
direction's tagged union; a message that carries big arrays or bytes says how many
(``blobs``) and the next ``blobs`` binary frames of the connection are their raw bytes, in
order (no base64, no msgpack around them: the receiver builds the array on the frame's
own buffer). Values sit in ``msgspec.Raw`` fields, encoded with corral's codec
(protocol/values.py) where the codec's out-of-band hooks point at blob indices instead of
shared-memory segments; so a frame is parsed first, its blobs collected, and only then
are its values rebuilt. Pickle is never accepted.

::

    client                                  server
      Hello(protocol, corral_version) --->
                                      <---  Welcome(...) | Refused(reason)
      Upload/Launch/Attach/... (seq)  --->
                                      <---  Answer(seq, value) | Problem(seq, error)
      Call(id, instance, ...) [blobs] --->
                                      <---  Log/Progress/Metric(id), Chunk(id) [blobs]...
      Credit(id, n), Cancel(id)       --->
                                      <---  Done(id) [blobs] | Failed(id, error)

The call messages have the local protocol's meaning (protocol/messages.py): ids chosen by
the client, events and chunks of one call in order, a cancel that ends the call with
``Cancelled`` once the work stopped. Log, Progress and Metric are the local Structs
themselves. New fields go last, with defaults; an incompatible change bumps
``NATIVE_PROTOCOL``, and the handshake names both versions when they differ.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from .._version import __version__
from ..protocol import messages as m

#: Bump on any incompatible change to this module's messages.
NATIVE_PROTOCOL = 1
#: The WebSocket path of the native protocol.
PATH = "/v1/corral"
#: The smallest array or bytes value that travels as its own binary frame.
BLOB_THRESHOLD = 64 * 1024
#: Upload chunk size the client uses (the server takes any size up to its ``max_chunk``).
CHUNK_SIZE = 1 << 20

_Struct = dict(array_like=True, omit_defaults=True)


class WireError(msgspec.Struct, **_Struct):
    """An exception, as data: ``cls`` is the corral class name (``WorkerCrashed``,
    ``RemoteError``, ``UploadError``...) or ``builtins.X``; ``message`` its whole text;
    ``fields`` its public attributes (``pid``, ``problems``...); for a RemoteError,
    ``type_name`` and ``traceback`` of the user's exception, and its cause chain."""

    cls: str
    message: str
    type_name: str = ""
    traceback: str = ""
    fields: dict[str, Any] = {}
    cause: WireError | None = None
    context: WireError | None = None
    notes: list[str] = []


class InstanceInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One instance as the server reports it."""

    id: str
    target: str
    program: str | None = None
    slots: int = 1
    workers: int = 1
    detached: bool = False
    state: str = "ready"
    pids: list[int] = []
    methods: dict[str, m.MethodInfo] = {}
    created: float = 0.0
    config: dict[str, Any] = {}


# ---- client -> server --------------------------------------------------------------------


class Hello(msgspec.Struct, tag=1, **_Struct):
    """The first frame. ``identity`` is the client's secret key: its blake3 hash (with the
    token's principal) names the owner of what this client launches; reusing the key after
    a reconnect is how a client finds its detached instances again."""

    protocol: int
    corral_version: str
    identity: str
    client: str = ""


class UploadBegin(msgspec.Struct, tag=2, **_Struct):
    """Start an upload of a bundle (an uncompressed tar) of ``size`` bytes in ``chunks``
    chunks, whose blake3 hex digest is ``hash``. Answered at once with ``{"have": bool}``:
    when the server has the program already, no chunk is sent."""

    seq: int
    hash: str
    size: int
    chunks: int
    name: str = ""


class UploadChunk(msgspec.Struct, tag=3, **_Struct):
    """Chunk ``index`` (0, 1, ... in order) of the upload begun with ``upload``. The last
    one is answered with the program's description, or with why it was refused."""

    seq: int
    upload: int
    index: int
    data: bytes


class Launch(msgspec.Struct, tag=4, kw_only=True, **_Struct):
    seq: int
    program: str | None = None
    target: str | None = None
    config: dict[str, Any] = {}
    slots: int = 1
    workers: int = 1
    requirements: list[str] | None = None
    detached: bool = False
    #: Worker keywords that a network client may set (timeout, max_calls...).
    options: dict[str, Any] = {}


class ListInstances(msgspec.Struct, tag=5, **_Struct):
    seq: int


class Attach(msgspec.Struct, tag=6, **_Struct):
    seq: int
    instance: str


class Detach(msgspec.Struct, tag=7, **_Struct):
    """Keep ``instance`` (None: every instance of this client) alive after this connection
    ends (until stopped, or ``--linger`` seconds without an attached client)."""

    seq: int
    instance: str | None = None


class Stop(msgspec.Struct, tag=8, **_Struct):
    seq: int
    instance: str
    grace: float = 5.0


class Query(msgspec.Struct, tag=9, **_Struct):
    """``what`` is ``health``, ``stats`` or ``describe`` of ``instance``."""

    seq: int
    instance: str
    what: str
    timeout: float | None = None


class Reload(msgspec.Struct, tag=10, **_Struct):
    seq: int
    instance: str
    config: dict[str, Any] | None = None


class Capabilities(msgspec.Struct, tag=11, **_Struct):
    seq: int


class Ping(msgspec.Struct, tag=12, **_Struct):
    seq: int


class Bye(msgspec.Struct, tag=13, **_Struct):
    """A clean goodbye: answered once this client's attached instances that end with the
    connection have stopped, so that a closed session leaves nothing running."""

    seq: int


class Call(msgspec.Struct, tag=20, **_Struct):
    """Call ``method`` of ``instance``. ``payload`` is ``[args, kwargs, context]`` in
    corral's codec; ``blobs`` binary frames follow. ``credit``: chunks the server may send
    before the client grants more (``Credit``)."""

    id: int
    instance: str
    method: str
    payload: msgspec.Raw
    blobs: int = 0
    timeout: float | None = None
    convert: bool = False
    credit: int = 64
    idempotent: bool = False


class Cancel(msgspec.Struct, tag=21, **_Struct):
    id: int


class Credit(msgspec.Struct, tag=22, **_Struct):
    id: int
    n: int


ClientMsg = Union[Hello, UploadBegin, UploadChunk, Launch, ListInstances, Attach, Detach,
                  Stop, Query, Reload, Capabilities, Ping, Bye, Call, Cancel, Credit]


# ---- server -> client --------------------------------------------------------------------


class Welcome(msgspec.Struct, tag=40, **_Struct):
    protocol: int
    corral_version: str
    session: str
    limits: dict[str, Any] = {}


class Refused(msgspec.Struct, tag=41, **_Struct):
    """The handshake failed (the connection closes after it)."""

    error: WireError


class Answer(msgspec.Struct, tag=42, **_Struct):
    seq: int
    value: msgspec.Raw
    blobs: int = 0


class Problem(msgspec.Struct, tag=43, **_Struct):
    seq: int
    error: WireError


class Chunk(msgspec.Struct, tag=44, **_Struct):
    id: int
    value: msgspec.Raw
    blobs: int = 0


class Done(msgspec.Struct, tag=45, **_Struct):
    id: int
    value: msgspec.Raw
    run_time: float
    blobs: int = 0


class Failed(msgspec.Struct, tag=46, **_Struct):
    id: int
    error: WireError


ServerMsg = Union[Welcome, Refused, Answer, Problem, m.Log, m.Progress, m.Metric, Chunk,
                  Done, Failed]


def check_version(protocol: int, corral_version: str, *, ours: str = "server") -> str | None:
    """Why a peer's protocol version does not fit, naming both; None when it fits."""
    if protocol == NATIVE_PROTOCOL:
        return None
    theirs = "client" if ours == "server" else "server"
    return (f"native protocol version mismatch: the {ours} speaks {NATIVE_PROTOCOL} (corral "
            f"{__version__}), the {theirs} speaks {protocol} (corral {corral_version}); use "
            "the same corral version on both sides")
