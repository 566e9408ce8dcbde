"""What crosses between a RayWorker (the host) and its actor (on a node): bytes only.

Values are encoded with corral's codec (protocol/values.py) into msgpack bytes, pickle
only where the worker was made with ``allow_pickle`` (as locally); big arrays and bytes
(64 KiB and up) are taken out of band as *blobs* (remote/codec.py's exporter) and handed
to Ray as uint8 arrays, which Ray moves through its object store without pickling their
bytes (one copy in, zero-copy reads on the node); on the node the local Worker puts them
in shared memory for the model process. Errors cross as remote/codec.py's ``WireError``.

Every reply, and every item of a streamed call, is a ``Reply`` header (bytes), or a tuple
``(header, *blobs)`` when it has blobs::

    EVENT   value = a Log, Progress or Metric (msgpack of the local protocol's Struct)
    CHUNK   value = one chunk of a streaming method              [its blobs]
    DONE    value = the result, run_time, events (plain calls)   [its blobs]
    FAILED  value = a WireError
"""

from __future__ import annotations

import threading
from typing import Any, Union

import msgspec

from ..protocol import messages as m
from ..protocol.values import args_to_wire, make_ext_hook, to_wire
from ..remote.codec import BlobExporter, BlobImporter, FileFolder, error_from_wire, error_to_wire
from ..remote.protocol import BLOB_THRESHOLD, WireError

EVENT, CHUNK, DONE, FAILED = 0, 1, 2, 3

_encode = msgspec.msgpack.Encoder().encode
NONE = _encode(None)
EMPTY_CALL = _encode([[], {}, None])


class CallMsg(msgspec.Struct, array_like=True):
    """A call, as the one bytes argument of the actor's method (Ray serialises each
    argument on its own: one argument instead of five is ~0.3 ms less per call here)."""

    id: int
    method: str
    payload: msgspec.Raw  # [args, kwargs, context] in corral's codec
    timeout: float | None = None
    convert: bool = False


def call_msg(cid: int, method: str, payload: bytes, timeout: float | None,
             convert: bool) -> bytes:
    return _encode(CallMsg(cid, method, msgspec.Raw(payload), timeout, convert))


read_call = msgspec.msgpack.Decoder(CallMsg).decode


class Reply(msgspec.Struct, array_like=True, omit_defaults=True):
    """The header of one reply or streamed item (see the module docstring)."""

    kind: int
    value: msgspec.Raw = msgspec.Raw(NONE)
    run_time: float = 0.0
    events: list[msgspec.Raw] = []


_decode_reply = msgspec.msgpack.Decoder(Reply).decode
_decode_error = msgspec.msgpack.Decoder(WireError).decode


class Codec:
    """Values to (bytes, blobs) and back, for one side of one worker. Decoding is
    serialised (the importer holds the blobs of the value being decoded)."""

    def __init__(self, allow_pickle: bool = False, threshold: int = BLOB_THRESHOLD):
        self.allow_pickle = allow_pickle
        self.threshold = threshold
        self.files = FileFolder(prefix="corral-ray-files-")
        self._importer = BlobImporter(self.files)
        self._decoder = msgspec.msgpack.Decoder(
            ext_hook=make_ext_hook(allow_pickle, importer=self._importer))
        self._events = msgspec.msgpack.Decoder(
            Union[m.Log, m.Progress, m.Metric], ext_hook=make_ext_hook(allow_pickle))
        self._lock = threading.Lock()

    def encode(self, value: Any, where: str = "value") -> tuple[bytes, list[Any]]:
        if value is None:
            return NONE, []
        exporter = BlobExporter(self.threshold)
        wire = to_wire(value, allow_pickle=self.allow_pickle, where=where, exporter=exporter)
        return _encode(wire), to_ray(exporter.blobs)

    def encode_call(self, args: tuple, kwargs: dict, context: Any
                    ) -> tuple[bytes, list[Any]]:
        if not args and not kwargs and context is None:
            return EMPTY_CALL, []
        exporter = BlobExporter(self.threshold)
        wire_args, wire_kwargs = args_to_wire(args, kwargs, self.allow_pickle, exporter)
        wire_ctx = to_wire(context, allow_pickle=self.allow_pickle, where="context",
                           exporter=exporter) if context is not None else None
        return _encode([wire_args, wire_kwargs, wire_ctx]), to_ray(exporter.blobs)

    def decode(self, raw: Any, blobs: Any = ()) -> Any:
        """ValueError (or TypeError) when malformed."""
        raw = memoryview(raw)
        if not blobs:
            if raw == NONE:
                return None
            if raw == EMPTY_CALL:
                return [], {}, None
        with self._lock:
            self._importer.blobs = list(blobs)
            try:
                return self._decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise ValueError(f"undecodable value: {exc}") from None
            finally:
                self._importer.blobs = []

    def encode_event(self, event: Any) -> bytes:
        if type(event) is m.Metric:
            event = msgspec.structs.replace(
                event, value=to_wire(event.value, allow_pickle=self.allow_pickle,
                                     where=f"metric {event.name!r}"))
        return _encode(event)

    def decode_event(self, raw: Any, call_id: int) -> Any:
        event = self._events.decode(raw)
        return msgspec.structs.replace(event, id=call_id)

    def close(self) -> None:
        self.files.close()


def to_ray(blobs: list[Any]) -> list[Any]:
    """Blobs as Ray moves them best: an array's bytes as a uint8 array (out of band in
    Ray's serializer: no copy into a pickle), bytes as they are."""
    if not blobs:
        return blobs
    out = []
    for blob in blobs:
        if isinstance(blob, memoryview):
            import numpy as np

            blob = np.frombuffer(blob, dtype=np.uint8)
        out.append(blob)
    return out


def reply(kind: int, value: bytes = NONE, blobs: list[Any] = (), run_time: float = 0.0,
          events: list[bytes] | None = None) -> Any:
    """A reply: its header alone (bytes) when it has no blobs, else (header, *blobs)."""
    header = _encode(Reply(kind, msgspec.Raw(value), run_time,
                           [msgspec.Raw(e) for e in events] if events else []))
    return (header, *blobs) if blobs else header


def failed(exc: BaseException) -> bytes:
    return _encode(Reply(FAILED, msgspec.Raw(_encode(error_to_wire(exc)))))


def read(item: Any) -> tuple[Reply, tuple]:
    """A reply as (its header, its blobs)."""
    if type(item) is bytes:
        return _decode_reply(item), ()
    return _decode_reply(item[0]), item[1:]


def error_of(header: Reply) -> BaseException:
    return error_from_wire(_decode_error(header.value))
