"""Every message on the wire, as msgspec Structs.

Two channels connect a host to a worker (see docs/architecture.md):

* the **control** channel carries the lifecycle: handshake, init, reload, health, shutdown;
* the **data** channel carries calls and everything that belongs to one call.

Each direction of each channel has its own tagged union, decoded by one typed decoder.
Structs are ``array_like`` with small integer tags: a no-op call and its reply are a few
dozen bytes. New fields must come last and have defaults, so that old peers still decode.
Every data message carries its call ``id``: the host routes by id, so a late message of a
finished call can never reach another caller.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec


class ErrorInfo(msgspec.Struct, array_like=True, omit_defaults=True):
    """An exception raised in the worker, as data.

    ``type`` is the qualified type name (``builtins.ValueError``, ``mypkg.mod.MyError``),
    ``traceback`` the whole formatted traceback. ``cause`` is an explicit ``raise ... from``
    cause, ``context`` an implicit one. ``kind`` says who is to blame: ``user`` code,
    ``arguments`` that do not fit the signature, an unknown ``method``, ``cancelled``
    (the call stopped because the host cancelled it), or a ``config`` that does not fit
    ``setup()`` (nothing was built).
    """

    type: str
    message: str
    traceback: str = ""
    cause: ErrorInfo | None = None
    context: ErrorInfo | None = None
    kind: str = "user"
    #: For ``arguments`` and ``config``: each problem with the inputs, ``{"loc": [...], "msg": ...}``.
    problems: list[dict[str, Any]] | None = None
    #: A builtin exception's own arguments, when they are plain values (str, bytes,
    #: numbers, None): the host rebuilds its twin with them (``OSError.errno``...).
    args: list[Any] | None = None
    #: An exception group's sub-exceptions.
    exceptions: list[ErrorInfo] | None = None


class MethodInfo(msgspec.Struct, array_like=True, omit_defaults=True):
    """A callable method of the target: ``kind`` is sync, async, generator or asyncgen."""

    kind: str
    signature: str
    doc: str = ""

    @property
    def streams(self) -> bool:
        return self.kind in ("generator", "asyncgen")


class TargetSpec(msgspec.Struct, array_like=True, omit_defaults=True):
    """What the worker should host: a reference ``file.py:Name`` / ``pkg.mod:Name``, or a
    cloudpickled local object (only between processes of one machine)."""

    ref: str | None = None
    pickled: bytes | None = None


# ---- control channel, host -> worker -------------------------------------------------


class Init(msgspec.Struct, tag=1, array_like=True):
    target: TargetSpec
    config: dict[str, Any]
    slots: int
    allow_pickle: bool = False
    oob_threshold: int = 64 * 1024
    #: Check ``config`` against ``setup()``'s type hints before anything is built; a
    #: config that does not fit fails with every problem (``ErrorInfo`` kind ``config``).
    check_config: bool = False
    #: Check the config only: build nothing, answer Ready with no methods (or
    #: SetupFailed), then wait to be stopped (a pre-flight check, e.g. before evicting).
    check_only: bool = False


class Reload(msgspec.Struct, tag=2, array_like=True):
    seq: int
    config: dict[str, Any]
    #: As ``Init.check_config``; a config that does not fit leaves the old target running.
    check_config: bool = False


class Ping(msgspec.Struct, tag=3, array_like=True):
    seq: int


class Shutdown(msgspec.Struct, tag=4, array_like=True):
    grace: float


class Release(msgspec.Struct, tag=5, array_like=True):
    """Both directions (see protocol/shm.py): ``ids``, the sender no longer uses these
    segments it was lent; ``forget``, the sender closed these segments of its own, which
    the receiver may unmap."""

    ids: list[int]
    forget: list[int] = []
    #: Frames the sender had sent on the data channel before this one: a Release sent on
    #: the control channel takes effect only once the receiver has read that many there,
    #: so a frame that still refers to one of these segments is read first.
    after: int = 0


class Cancel(msgspec.Struct, tag=6, array_like=True):
    """Stop call ``id``: it ends with a ``Failed`` of kind ``cancelled`` once the work has
    really stopped (or as it would have anyway, if it was already finishing)."""

    id: int


class Describe(msgspec.Struct, tag=7, array_like=True):
    """Ask for the JSON Schemas of the target's methods (answered by ``Description``).
    On request only: building them costs imports a worker need not pay at start."""

    seq: int


class Credit(msgspec.Struct, tag=8, array_like=True):
    """Output flow control: the host consumed ``n`` more chunks of call ``id``, which may
    send that many more (on the control channel: the call's thread may be blocked)."""

    id: int
    n: int


HostControl = Union[Init, Reload, Ping, Shutdown, Release, Cancel, Describe, Credit]


# ---- control channel, worker -> host -------------------------------------------------


class Hello(msgspec.Struct, tag=11, array_like=True):
    protocol: int
    corral_version: str
    pid: int
    python: str


class Ready(msgspec.Struct, tag=12, array_like=True):
    seq: int
    target: str
    methods: dict[str, MethodInfo]
    setup_logs: list[str]
    setup_time: float


class SetupFailed(msgspec.Struct, tag=13, array_like=True):
    seq: int
    error: ErrorInfo
    setup_logs: list[str]


class Pong(msgspec.Struct, tag=14, array_like=True):
    seq: int
    busy: int


class WorkerLog(msgspec.Struct, tag=15, array_like=True):
    """Output written outside any call, or fd-level output that cannot be attributed."""

    stream: str
    text: str


class MethodSchema(msgspec.Struct, array_like=True, omit_defaults=True):
    """A method's inputs (its keyword parameters, as a JSON Schema object) and output (for
    a generator: each item); None where the type hints cannot be described."""

    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None


class Description(msgspec.Struct, tag=16, array_like=True):
    seq: int
    methods: dict[str, MethodSchema]


WorkerControl = Union[Hello, Ready, SetupFailed, Pong, WorkerLog, Release, Description]


# ---- data channel, host -> worker ----------------------------------------------------


class CallStreams(msgspec.Struct, array_like=True):
    """A call's streams (one optional field of ``Call``, one byte when absent)."""

    #: Output flow control (a streaming method): chunks the worker may send before the
    #: host grants more with ``Credit``; 0 means no limit.
    window: int = 0
    #: Streamed arguments (see ``InChunk``): where each sits, ``[position, window]`` with
    #: an int position for a positional argument or a str for a keyword one; its value in
    #: ``args``/``kwargs`` is a placeholder. A streamed argument is numbered by its place
    #: in this list (``InChunk.slot``), and may have ``window`` chunks in flight.
    inputs: list[Any] | None = None


class Call(msgspec.Struct, tag=21, array_like=True):

    id: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    context: dict[str, Any] | None = None
    #: Shared-memory leases the host ended since its last message (see ``Release``),
    #: carried here so that a busy connection needs no separate message for them.
    release: Release | None = None
    #: The kwargs are external input (JSON, command-line strings): check each against the
    #: method's type hints, convert it, and fail with every problem listed.
    convert: bool = False
    #: Flow control and streamed arguments, when the call has either (docs/streams.md).
    streams: CallStreams | None = None


class InChunk(msgspec.Struct, tag=22, array_like=True):
    """One chunk of streamed argument ``slot`` of call ``id`` (sent within the worker's
    ``InCredit``: at most the call's window ahead)."""

    id: int
    slot: int
    value: Any


class InEnd(msgspec.Struct, tag=23, array_like=True):
    """Streamed argument ``slot`` of call ``id`` has no more chunks. (A producer that
    raises cancels the call instead: the caller gets the error, the worker a Cancel.)"""

    id: int
    slot: int


HostData = Union[Call, InChunk, InEnd]


# ---- data channel, worker -> host ----------------------------------------------------


class Log(msgspec.Struct, tag=31, array_like=True):
    id: int
    stream: str
    text: str


class Progress(msgspec.Struct, tag=32, array_like=True):
    id: int
    step: float
    total: float | None = None
    phase: str | None = None


class Metric(msgspec.Struct, tag=33, array_like=True):
    id: int
    name: str
    value: Any
    mode: str = "replace"


class Chunk(msgspec.Struct, tag=34, array_like=True):
    id: int
    value: Any


class Done(msgspec.Struct, tag=35, array_like=True):
    id: int
    value: Any
    run_time: float
    #: The leases of this call's own big arguments, ended before the reply (see ``Call``).
    release: Release | None = None


class Failed(msgspec.Struct, tag=36, array_like=True):
    id: int
    error: ErrorInfo


class InCredit(msgspec.Struct, tag=37, array_like=True):
    """Input flow control: the call consumed ``n`` more chunks of streamed argument
    ``slot``; the host may send that many more."""

    id: int
    slot: int
    n: int
    #: The leases the method let go of so far (chunks it dropped), applied before the
    #: credit: the feeder then reuses those segments instead of making new ones.
    release: Release | None = None


WorkerData = Union[Log, Progress, Metric, Chunk, Done, Failed, InCredit]

METRIC_MODES = ("replace", "increment", "append")
