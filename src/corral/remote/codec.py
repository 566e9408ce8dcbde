"""Values and errors across the network: corral's codec with blobs, and typed errors.

Values: ``protocol/values.py`` already moves big arrays and bytes out of band through an
*exporter* and an *importer* (shared memory, locally). Here the exporter collects them as
*blobs* (their own WebSocket frames) and the importer builds each value on the received
frame's buffer: one copy on the sending side's socket, none on the receiving side's
(arrays received this way are read-only views; ``.copy()`` one to write to it). Pickle is
never allowed, and a type is never imported because a peer named it.

Errors: an exception becomes a ``WireError`` (its corral class, message, public fields;
a RemoteError keeps the remote type, traceback and cause chain) and is rebuilt on the
other side as the same class, so ``except WorkerCrashed`` or ``except ValueError`` work as
they do locally.
"""

from __future__ import annotations

import builtins
from typing import Any

import msgspec

from .. import exceptions as errors
from ..protocol import messages as m
from ..protocol.values import args_to_wire, make_ext_hook, to_wire
from . import errors as remote_errors
from .protocol import BLOB_THRESHOLD, WireError

_encode = msgspec.msgpack.Encoder().encode
#: The payloads of the commonest call and result (no arguments; None): no walk, no encode.
EMPTY_CALL = msgspec.Raw(_encode([[], {}, None]))
NONE = msgspec.Raw(_encode(None))


class BlobExporter:
    """The codec's out-of-band hook: each big value becomes blob number ``len(blobs)``;
    a ``corral.File`` sends its bytes (read now) as a blob, whatever their size."""

    __slots__ = ("threshold", "blobs")

    def __init__(self, threshold: int = BLOB_THRESHOLD):
        self.threshold = threshold
        self.blobs: list[Any] = []

    def export_file(self, f: Any) -> list[Any]:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise TypeError(f"cannot send {f!r}: {exc.strerror}") from None
        self.blobs.append(data)
        return [len(self.blobs) - 1, f.name, f.content_type]

    def export_bytes(self, data: Any) -> tuple[int, int, int]:
        self.blobs.append(data)
        return len(self.blobs) - 1, 0, len(data)

    def export_array(self, arr: Any) -> tuple[int, int, int, bool]:
        # ``arr`` is contiguous (the codec made it so); its bytes, without a copy.
        import numpy as np

        self.blobs.append(memoryview(arr.reshape(-1).view(np.uint8)))
        return len(self.blobs) - 1, 0, arr.nbytes, False


class BlobImporter:
    """The codec's receiving hook: values built on the blobs of the message at hand; a
    file's bytes are written to a new file in ``files.folder()``."""

    __slots__ = ("blobs", "files")

    def __init__(self, files: "FileFolder | None" = None) -> None:
        self.blobs: list[Any] = []
        self.files = files

    def import_file(self, index: int, name: Any, content_type: Any) -> Any:
        from ..types import File

        if self.files is None:
            raise ValueError("a file arrived where files are not accepted")
        if not 0 <= index < len(self.blobs):
            raise ValueError(f"a file refers to blob {index}, but the message has "
                             f"{len(self.blobs)}")
        if not isinstance(name, str) or not isinstance(content_type, (str, type(None))):
            raise ValueError("a file's name must be a str")
        path = self.files.new(name)
        with open(path, "wb") as out:
            out.write(self.blobs[index])
        return File(path, name, content_type)

    def _blob(self, index: int, nbytes: int) -> Any:
        if not 0 <= index < len(self.blobs):
            raise ValueError(f"a value refers to blob {index}, but the message has "
                             f"{len(self.blobs)}")
        blob = self.blobs[index]
        if len(blob) != nbytes:
            raise ValueError(f"blob {index} has {len(blob)} bytes, its value says {nbytes}")
        return blob

    def import_bytes(self, index: int, offset: int, nbytes: int, kind: type) -> Any:
        blob = self._blob(index, nbytes)
        return blob if kind is bytes and type(blob) is bytes else kind(blob)

    def import_array(self, index: int, offset: int, nbytes: int, dtype: Any, shape: tuple,
                     order: str) -> Any:
        import numpy as np

        blob = self._blob(index, nbytes)
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize != nbytes:
            raise ValueError(f"blob {index} has {nbytes} bytes, shape {shape} of {dtype} "
                             f"needs {count * dtype.itemsize}")
        flat = np.frombuffer(blob, dtype=dtype, count=count)
        return flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)


class FileFolder:
    """Where the files that arrive on one connection are written: a temporary folder,
    made on first use and removed (with them) by ``close()``."""

    def __init__(self, parent: str | None = None, prefix: str = "corral-remote-files-"):
        self.parent = parent
        self.prefix = prefix
        self.path: str | None = None
        self._count = 0

    def new(self, name: str) -> str:
        import os
        import tempfile

        if self.path is None:
            self.path = tempfile.mkdtemp(prefix=self.prefix, dir=self.parent)
        self._count += 1
        # The client's name is kept only as a suffix: never a path of its choosing.
        safe = "".join(ch for ch in os.path.basename(name) if ch.isalnum() or ch in "._-")
        folder = os.path.join(self.path, str(self._count))
        os.mkdir(folder)
        return os.path.join(folder, safe[-100:] or "file")

    def close(self) -> None:
        import shutil

        path, self.path = self.path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


class ValueCodec:
    """Encode values to (Raw, blobs) and decode them back, for one connection (one reader:
    the importer holds the blobs of the message being decoded). Files that arrive go to
    ``files`` (a FileFolder; ``close()`` removes them)."""

    def __init__(self, threshold: int = BLOB_THRESHOLD, files: FileFolder | None = None):
        self.threshold = threshold
        self.files = files if files is not None else FileFolder()
        self._importer = BlobImporter(self.files)
        self._decode = msgspec.msgpack.Decoder(
            ext_hook=make_ext_hook(False, importer=self._importer)).decode

    def encode(self, value: Any, where: str = "value") -> tuple[msgspec.Raw, list[Any]]:
        """``value`` in corral's codec; raises TypeError naming an unsupported part."""
        if value is None:
            return NONE, []
        exporter = BlobExporter(self.threshold)
        wire = to_wire(value, allow_pickle=False, where=where, exporter=exporter)
        return msgspec.Raw(_encode(wire)), exporter.blobs

    def encode_call(self, args: tuple, kwargs: dict, context: Any
                    ) -> tuple[msgspec.Raw, list[Any]]:
        """A call's ``[args, kwargs, context]``, with errors located as locally
        (``args[0]``, ``kwargs['x']``, ``context``)."""
        if not args and not kwargs and context is None:
            return EMPTY_CALL, []
        exporter = BlobExporter(self.threshold)
        wire_args, wire_kwargs = args_to_wire(args, kwargs, False, exporter)
        wire_ctx = to_wire(context, where="context", exporter=exporter) \
            if context is not None else None
        return msgspec.Raw(_encode([wire_args, wire_kwargs, wire_ctx])), exporter.blobs

    def decode(self, raw: Any, blobs: list[Any]) -> Any:
        """The value of ``raw`` with ``blobs``; ValueError/TypeError when malformed."""
        if not blobs and raw == NONE:
            return None
        self._importer.blobs = blobs
        try:
            return self._decode(raw)
        except msgspec.DecodeError as exc:
            raise ValueError(f"undecodable value: {exc}") from None
        finally:
            self._importer.blobs = []


# ---- errors ------------------------------------------------------------------------------

#: The exception classes that cross by name, and the attributes that cross with them.
_FIELDS: dict[str, tuple[str, ...]] = {
    "ArgumentError": ("method", "signature", "detail", "problems"),
    "MethodNotFound": ("method", "available"),
    "SetupError": ("error_type", "remote_traceback", "logs", "problems", "stderr"),
    "WorkerStartupError": ("stderr",),
    "WorkerCrashed": ("pid", "exitcode", "signal_name", "stderr"),
    "WorkerUnavailable": ("pid",),
    "ProtocolError": ("pid",),
    "CallTimeout": ("timeout",),
}


def _classes() -> dict[str, type]:
    table = {name: getattr(errors, name) for name in errors.__all__}
    table.update((name, getattr(remote_errors, name)) for name in remote_errors.__all__)
    return table


def error_to_wire(exc: BaseException) -> WireError:
    """``exc`` as data (see the module docstring)."""
    if isinstance(exc, errors.RemoteError):
        cause = exc.__cause__
        context = exc.__context__ if cause is None and not exc.__suppress_context__ else None
        return WireError(
            "RemoteError", exc.message, exc.type_name, exc.remote_traceback,
            cause=error_to_wire(cause) if isinstance(cause, errors.RemoteError) else None,
            context=error_to_wire(context) if isinstance(context, errors.RemoteError)
            else None)
    table = _classes()
    for cls in type(exc).__mro__:
        name = cls.__name__
        if table.get(name) is cls:
            fields = {}
            for f in _FIELDS.get(name, ()) + getattr(cls, "wire_fields", ()):
                value = getattr(exc, f, None)
                if value is not None:
                    fields[f] = value
            try:
                _encode(fields)
            except TypeError:
                fields = {}
            return WireError(name, _message(exc), fields=fields,
                             notes=list(getattr(exc, "__notes__", ())))
    if type(exc).__module__ == "builtins":
        return WireError(f"builtins.{type(exc).__name__}", str(exc))
    return WireError("CorralError", f"{type(exc).__name__}: {exc}")


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


def error_from_wire(w: WireError) -> BaseException:
    """The exception ``w`` describes, of the same class as on the sending side."""
    if w.cls == "RemoteError":
        return errors.make_remote_error(_info(w))
    if w.cls.startswith("builtins."):
        cls = getattr(builtins, w.cls[len("builtins."):], None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(w.message)
            except Exception:  # noqa: BLE001 - a builtin with a stricter __init__
                pass
        return errors.CorralError(w.message)
    cls = errors.Cancelled if w.cls == "Cancelled" else _classes().get(w.cls)
    if cls is None:
        return errors.CorralError(w.message)
    exc = cls.__new__(cls)
    Exception.__init__(exc, w.message)
    for k, v in w.fields.items():
        try:
            setattr(exc, k, v)
        except (AttributeError, TypeError):
            pass
    for note in w.notes:
        exc.add_note(note)
    return exc


def _info(w: WireError) -> m.ErrorInfo:
    return m.ErrorInfo(w.type_name, w.message, w.traceback,
                       cause=_info(w.cause) if w.cause is not None else None,
                       context=_info(w.context) if w.context is not None else None)
