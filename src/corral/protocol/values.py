"""The value codec: Python values <-> msgpack with extension types, exactly.

msgpack alone turns tuples into lists, sets into lists and refuses big ints; JSON peers lose
even more. ``to_wire`` walks a value and replaces every type msgpack would not round-trip
exactly with an ``Ext`` whose payload is itself msgpack; the decoder's ``ext_hook`` rebuilds
it. Plain values (str, int, float, bool, None, bytes, lists of them, str-keyed dicts) pass
through untouched, so small calls cost almost nothing.

An unsupported value raises TypeError naming its type and where it sat, for example
``kwargs['batch'][3]``. Pickle is used only when the Worker opted in (local only).
"""

from __future__ import annotations

import datetime as _dt
import struct as _struct
from typing import Any, Callable

import msgspec

Ext = msgspec.msgpack.Ext

# Extension codes. Never renumber: they are part of the protocol.
TUPLE = 1
SET = 2
FROZENSET = 3
BIGINT = 4
COMPLEX = 5
DICT = 6  # a dict with keys other than str: a list of [key, value] pairs
BYTEARRAY = 7
DATETIME = 8
DATE = 9
TIME = 10
TIMEDELTA = 11
DECIMAL = 12
UUID = 13
NDARRAY = 14
NPSCALAR = 15
PATH = 16
PICKLE = 17
SHM_ARRAY = 18  # an array in a shared-memory segment: [segment, offset, nbytes, descr, shape, order]
SHM_BYTES = 19  # bytes in a shared-memory segment: [segment, offset, nbytes, bytearray?]
OBJECT = 20  # an Enum member, dataclass or msgspec Struct: [kind, module, qualname, state]
FILE = 21  # a corral.File: [path, name, content_type]
TORCH = 22  # a torch CPU tensor: [dtype name, requires_grad, its data as an array ext]
# A corral.File whose bytes travel beside the frame (across a network, remote/codec.py):
# [blob index, name, content_type]; only through an exporter/importer that handle files.
REMOTE_FILE = 23

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SCALARS = frozenset({str, float, bool, type(None), bytes})
#: Types that cross as they are, whatever their value: a caller may skip ``to_wire``.
PLAIN_TYPES = frozenset({str, float, bool, type(None)})


class _Ctx:
    """What a walk needs besides the value: may it pickle, and where do big buffers go."""

    __slots__ = ("allow_pickle", "exporter")

    def __init__(self, allow_pickle: bool, exporter: Any):
        self.allow_pickle = allow_pickle
        self.exporter = exporter
_FAST_LIST_TYPES = _SCALARS | {int}

_packb = msgspec.msgpack.Encoder().encode


class _Unsupported(Exception):
    """Internal: carries the failing value's location outwards while the walk unwinds."""

    def __init__(self, value: Any, reason: str):
        self.value = value
        self.reason = reason
        self.path: list[str] = []


def to_wire(value: Any, *, allow_pickle: bool = False, where: str = "value",
            exporter: Any = None) -> Any:
    """Return ``value`` with every non-plain part replaced by an Ext, ready for msgpack.
    With an ``exporter`` (``shm.Exporter``), big arrays and bytes go to shared memory.

    Raises TypeError naming the unsupported type and its location (``where`` + path).
    """
    try:
        return _walk(value, _Ctx(allow_pickle, exporter))
    except _Unsupported as exc:
        location = where + "".join(reversed(exc.path))
        raise TypeError(
            f"cannot send a value of type {_type_name(exc.value)} at {location}: {exc.reason}"
        ) from None
    except RecursionError:
        raise _too_deep(where) from None


def args_to_wire(args: tuple, kwargs: dict, allow_pickle: bool = False,
                 exporter: Any = None) -> tuple[list, dict]:
    """``to_wire`` for a call's arguments, with locations such as ``args[0]``/``kwargs['x']``."""
    if not args and not kwargs:
        return [], {}
    # Most calls carry only plain values and small ints: nothing to replace, so no walk
    # (and no context) per value. (Not bytes: big ones go to shared memory.)
    for v in args:
        t = type(v)
        if t not in PLAIN_TYPES and (t is not int or not _INT_MIN <= v <= _INT_MAX):
            break
    else:
        for v in kwargs.values():
            t = type(v)
            if t not in PLAIN_TYPES and (t is not int or not _INT_MIN <= v <= _INT_MAX):
                break
        else:
            return list(args), kwargs
    ctx = _Ctx(allow_pickle, exporter)
    try:
        wire_args = [_walk(a, ctx) for a in args] if args else []
    except RecursionError:
        raise _too_deep("the arguments") from None
    except _Unsupported:
        for i, a in enumerate(args):
            to_wire(a, allow_pickle=allow_pickle, where=f"args[{i}]")
        raise
    try:
        wire_kwargs = {k: _walk(v, ctx) for k, v in kwargs.items()} if kwargs else {}
    except RecursionError:
        raise _too_deep("the keyword arguments") from None
    except _Unsupported:
        for k, v in kwargs.items():
            to_wire(v, allow_pickle=allow_pickle, where=f"kwargs[{k!r}]")
        raise
    return wire_args, wire_kwargs


def _too_deep(where: str) -> ValueError:
    return ValueError(f"cannot send {where}: nested too deeply (Python's recursion limit)")


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _walk(v: Any, ctx: _Ctx) -> Any:
    t = type(v)
    if t in _SCALARS:
        if t is bytes and ctx.exporter is not None and len(v) >= ctx.exporter.threshold:
            return _oob_bytes(v, ctx.exporter, False)
        return v
    if t is int:
        if _INT_MIN <= v <= _INT_MAX:
            return v
        # Two's complement bytes: no 4300-digit limit, unlike decimal text.
        return Ext(BIGINT, v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True))
    if t is list:
        return _walk_list(v, ctx)
    if t is dict:
        return _walk_dict(v, ctx)
    encode = _ENCODERS.get(t)
    if encode is not None:
        return encode(v, ctx)
    return _walk_other(v, ctx)


def _oob_bytes(v: Any, exporter: Any, is_bytearray: bool) -> Any:
    seg, offset, n = exporter.export_bytes(v)
    return Ext(SHM_BYTES, _packb([seg, offset, n, is_bytearray]))


def _walk_list(v: list, ctx: _Ctx) -> list:
    types = set(map(type, v))
    if types <= _FAST_LIST_TYPES and (int not in types or _ints_fit(v, types)) \
            and (bytes not in types or ctx.exporter is None):
        return v
    out = []
    for i, x in enumerate(v):
        try:
            out.append(_walk(x, ctx))
        except _Unsupported as exc:
            exc.path.append(f"[{i}]")
            raise
    return out


def _ints_fit(v: list, types: set) -> bool:
    ints = v if len(types) == 1 else [x for x in v if type(x) is int]
    return not ints or (_INT_MIN <= min(ints) and max(ints) <= _INT_MAX)


def _walk_items(items: Any, ctx: _Ctx) -> list:
    out = []
    for i, x in enumerate(items):
        try:
            out.append(_walk(x, ctx))
        except _Unsupported as exc:
            exc.path.append(f"[{i}]")
            raise
    return out


def _walk_dict(v: dict, ctx: _Ctx) -> Any:
    if all(type(k) is str for k in v):
        out = {}
        for k, x in v.items():
            try:
                out[k] = _walk(x, ctx)
            except _Unsupported as exc:
                exc.path.append(f"[{k!r}]")
                raise
        return out
    pairs = []
    for k, x in v.items():
        try:
            pairs.append([_walk(k, ctx), _walk(x, ctx)])
        except _Unsupported as exc:
            exc.path.append(f"[{k!r}]")
            raise
    return Ext(DICT, _packb(pairs))


def _enc_tuple(v, ctx):
    return Ext(TUPLE, _packb(_walk_items(v, ctx)))


def _enc_set(v, ctx):
    return Ext(SET, _packb(_walk_items(v, ctx)))


def _enc_frozenset(v, ctx):
    return Ext(FROZENSET, _packb(_walk_items(v, ctx)))


def _enc_complex(v, ctx):
    return Ext(COMPLEX, _packb([v.real, v.imag]))


def _enc_bytearray(v, ctx):
    if ctx.exporter is not None and len(v) >= ctx.exporter.threshold:
        return _oob_bytes(v, ctx.exporter, True)
    return Ext(BYTEARRAY, bytes(v))


def _tz_key(tz: Any) -> Any:
    # A ZoneInfo keeps its name (DST rules); any other tzinfo crosses as a fixed offset.
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else None


def _enc_datetime(v, ctx):
    return Ext(DATETIME, _packb([v.isoformat(), _tz_key(v.tzinfo), v.fold]))


def _enc_date(v, ctx):
    return Ext(DATE, v.isoformat().encode())


def _enc_time(v, ctx):
    return Ext(TIME, _packb([v.isoformat(), _tz_key(v.tzinfo), v.fold]))


def _enc_timedelta(v, ctx):
    return Ext(TIMEDELTA, _packb([v.days, v.seconds, v.microseconds]))


def _enc_decimal(v, ctx):
    return Ext(DECIMAL, str(v).encode())


def _enc_uuid(v, ctx):
    return Ext(UUID, v.bytes)


def _enc_path(v, ctx):
    return Ext(PATH, _packb([type(v).__name__, str(v)]))


_ENCODERS: dict[type, Callable[[Any, bool], Any]] = {
    tuple: _enc_tuple,
    set: _enc_set,
    frozenset: _enc_frozenset,
    complex: _enc_complex,
    bytearray: _enc_bytearray,
    _dt.datetime: _enc_datetime,
    _dt.date: _enc_date,
    _dt.time: _enc_time,
    _dt.timedelta: _enc_timedelta,
}
# decimal, uuid and pathlib are imported on first use: they cost a worker's cold start.
_LAZY_MODULES = frozenset({"decimal", "uuid", "pathlib"})


def _register_lazy_encoders() -> None:
    import decimal
    import pathlib
    import uuid

    _ENCODERS.update({
        decimal.Decimal: _enc_decimal,
        uuid.UUID: _enc_uuid,
        pathlib.PosixPath: _enc_path,
        pathlib.PurePosixPath: _enc_path,
        pathlib.WindowsPath: _enc_path,
        pathlib.PureWindowsPath: _enc_path,
    })


def _walk_other(v: Any, ctx: _Ctx) -> Any:
    t = type(v)
    module = t.__module__
    if module == "numpy" or module.startswith("numpy."):
        return _enc_numpy(v, ctx)
    if module == "torch" or module.startswith("torch."):
        return _enc_torch(v, t, ctx)
    obj = _enc_object(v, t, ctx)
    if obj is not None:
        return obj
    if module in _LAZY_MODULES and type(v) not in _ENCODERS:
        _register_lazy_encoders()
        encode = _ENCODERS.get(type(v))
        if encode is not None:
            return encode(v, ctx)
    if ctx.allow_pickle:
        try:
            return Ext(PICKLE, _pickle_dumps(v))
        except Exception as exc:  # noqa: BLE001 - any pickling failure means "unsupported"
            raise _Unsupported(v, f"pickling failed: {exc}") from None
    raise _Unsupported(
        v, "not a supported type (start the Worker with allow_pickle=True to pickle it)"
    )


def _enc_torch(v: Any, t: type, ctx: _Ctx) -> Any:
    """A CPU tensor crosses as its numpy array (shared memory when big) plus its dtype
    name and requires_grad; ``torch.from_numpy`` rebuilds it without a copy."""
    import torch

    if t is not torch.Tensor:
        raise _Unsupported(v, "only plain torch.Tensor crosses (for a Parameter, send "
                              ".detach())" if isinstance(v, torch.Tensor) else
                              "not a supported torch type")
    if v.device.type != "cpu":
        raise _Unsupported(v, f"the tensor is on {v.device}: send tensor.cpu()")
    if v.layout != torch.strided:
        raise _Unsupported(v, "sparse tensors do not cross: send tensor.to_dense()")
    data = v.detach()
    if data.is_conj():
        data = data.resolve_conj()
    name = str(v.dtype).removeprefix("torch.")
    if v.dtype == torch.bfloat16:
        data = data.contiguous().view(torch.int16)  # numpy has no bfloat16: move the bits
    arr = data.contiguous().numpy() if not data.is_contiguous() else data.numpy()
    return Ext(TORCH, _packb([name, bool(v.requires_grad), _enc_numpy(arr, ctx)]))


def _dec_torch(name: str, requires_grad: bool, arr: Any) -> Any:
    try:
        import torch
    except ImportError:
        raise ValueError("a torch tensor arrived but torch is not importable here") from None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    import numpy as np

    if not isinstance(arr, np.ndarray):
        raise ValueError("a torch tensor's data must be an array")
    tensor = torch.from_numpy(arr) if arr.ndim else torch.tensor(arr)
    if dtype == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    elif tensor.dtype != dtype:
        raise ValueError(f"torch tensor data is {tensor.dtype}, announced as {dtype}")
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def _enc_object(v: Any, t: type, ctx: _Ctx) -> Any:
    """Enum members, dataclasses, msgspec Structs and corral.File, by type name + state.
    The type must be importable on the other side under the same name."""
    if t.__module__ == "corral.types" and t.__name__ == "File":
        export_file = getattr(ctx.exporter, "export_file", None)
        if export_file is not None:
            return Ext(REMOTE_FILE, _packb(export_file(v)))
        return Ext(FILE, _packb([v.path, v.name, v.content_type]))
    kind = None
    if "__dataclass_fields__" in t.__dict__ or hasattr(t, "__dataclass_fields__"):
        if isinstance(v, type):
            return None
        kind = "dataclass"
        # Real fields only (not ClassVar/InitVar pseudo-fields).
        state: Any = {name: getattr(v, name) for name, f in t.__dataclass_fields__.items()
                      if getattr(f._field_type, "name", "_FIELD") == "_FIELD"
                      and hasattr(v, name)}
    elif isinstance(v, msgspec.Struct):
        kind = "struct"
        state = {name: getattr(v, name) for name in t.__struct_fields__}
    else:
        import enum

        if isinstance(v, enum.Enum):
            kind, state = "enum", v.value
    if kind is None:
        return None
    if "<locals>" in t.__qualname__:
        raise _Unsupported(v, f"{kind} types defined inside a function cannot be found by "
                              "the other side; define it at module level")
    try:
        wire_state = _walk(state, ctx)
    except _Unsupported as exc:
        exc.path.append(f".{kind}")
        raise
    return Ext(OBJECT, _packb([kind, t.__module__, t.__qualname__, wire_state]))


def _pickle_dumps(v: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        import pickle

        return pickle.dumps(v, protocol=5)
    return cloudpickle.dumps(v, protocol=5)


# ---- numpy (imported only when a numpy value shows up) -------------------------------


def _enc_numpy(v: Any, ctx: _Ctx) -> Any:
    import numpy as np

    if type(v) is np.ndarray:
        if v.dtype.hasobject:
            if ctx.allow_pickle:
                return Ext(PICKLE, _pickle_dumps(v))
            raise _Unsupported(v, "arrays of Python objects cannot cross without pickle")
        if v.flags.f_contiguous and not v.flags.c_contiguous:
            order, flat = "F", v.T
        else:
            order, flat = "C", v if v.flags.c_contiguous else np.ascontiguousarray(v)
        descr = np.lib.format.dtype_to_descr(v.dtype)
        exporter = ctx.exporter
        if exporter is not None and v.nbytes >= exporter.threshold:
            seg, offset, n, theirs = exporter.export_array(flat)
            return Ext(SHM_ARRAY, _packb(_walk(
                [seg, offset, n, descr, list(v.shape), order, theirs], _PLAIN_CTX)))
        header = _packb(_walk([descr, list(v.shape), order], _PLAIN_CTX))
        # One copy of the data, straight into the payload; viewing it as bytes works for
        # every dtype (datetime64 and structured ones refuse the buffer protocol).
        payload = bytearray(4 + len(header) + v.nbytes)
        _HEADER_LEN.pack_into(payload, 0, len(header))
        payload[4 : 4 + len(header)] = header
        if v.nbytes:
            dest = np.frombuffer(payload, dtype=np.uint8, offset=4 + len(header))
            dest[:] = flat.reshape(-1).view(np.uint8)
        return Ext(NDARRAY, payload)
    if isinstance(v, np.ndarray):
        raise _Unsupported(v, "numpy array subclasses would lose what makes them special "
                              "(a mask, a matrix type): send a plain ndarray and the parts")
    if isinstance(v, np.generic):
        if v.dtype.hasobject:
            raise _Unsupported(v, "numpy object scalars cannot cross without pickle")
        header = _packb(_walk([np.lib.format.dtype_to_descr(v.dtype), [], "C"], _PLAIN_CTX))
        return Ext(NPSCALAR, _HEADER_LEN.pack(len(header)) + header + v.tobytes())
    raise _Unsupported(v, "this numpy type is not supported")


_HEADER_LEN = _struct.Struct("<I")
_PLAIN_CTX = _Ctx(False, None)


def _dec_numpy_parts(data: memoryview, decode: Callable):
    import numpy as np

    (n,) = _HEADER_LEN.unpack_from(data, 0)
    # The header went through to_wire, so a structured descr keeps its tuples.
    descr, shape, order = decode(data[4 : 4 + n])
    dtype = np.lib.format.descr_to_dtype(descr)
    return np, dtype, tuple(shape), order, data[4 + n :]


def _dec_ndarray(data: memoryview, decode: Callable) -> Any:
    np, dtype, shape, order, raw = _dec_numpy_parts(data, decode)
    count = 1
    for d in shape:
        count *= d
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"array payload has {len(raw)} bytes, shape {shape} needs "
                         f"{count * dtype.itemsize}")
    flat = np.frombuffer(raw, dtype=dtype, count=count).copy()  # own the memory, writable
    if order == "F":
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def _dec_npscalar(data: memoryview, decode: Callable) -> Any:
    np, dtype, _shape, _order, raw = _dec_numpy_parts(data, decode)
    if len(raw) != dtype.itemsize:
        raise ValueError("numpy scalar payload has the wrong size")
    return np.frombuffer(raw, dtype=dtype, count=1)[0].copy()


# ---- decoding ------------------------------------------------------------------------


def _rebuild_tz(iso: str, key: Any, cls: Any, fold: int) -> Any:
    v = cls.fromisoformat(iso)
    if key is not None:
        from zoneinfo import ZoneInfo

        v = v.replace(tzinfo=ZoneInfo(key))
    return v.replace(fold=fold) if fold else v


def _find_type(module: str, qualname: str, may_import: bool) -> Any:
    import sys

    mod = sys.modules.get(module)
    if mod is None:
        if not may_import:
            # The host never imports a module because a worker named it: importing runs code.
            raise ValueError(f"type {module}.{qualname} is not known here (its module is not "
                             "imported on the receiving side)")
        import importlib

        mod = importlib.import_module(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise ValueError(f"{module}.{qualname} is not a type")
    return obj


def _rebuild_object(kind: str, cls: Any, state: Any) -> Any:
    if kind == "enum":
        import enum

        if not issubclass(cls, enum.Enum):
            raise ValueError(f"{cls.__qualname__} is not an Enum")
        return cls(state)
    if kind == "struct":
        if not issubclass(cls, msgspec.Struct):
            raise ValueError(f"{cls.__qualname__} is not a msgspec Struct")
        return cls(**state)
    if kind == "dataclass":
        if not hasattr(cls, "__dataclass_fields__") or not isinstance(state, dict):
            raise ValueError(f"{cls.__qualname__} is not a dataclass")
        # Field by field, like copy.copy: no __init__/__post_init__ side effects, and frozen
        # or slotted dataclasses work too.
        obj = cls.__new__(cls)
        for name, value in state.items():
            if name not in cls.__dataclass_fields__:
                raise ValueError(f"{cls.__qualname__} has no field {name!r}")
            object.__setattr__(obj, name, value)
        return obj
    raise ValueError(f"unknown object kind {kind!r}")


class Unrebuilt:
    """Stands in for an Enum, dataclass or Struct value that this side cannot rebuild (its
    type is not known here, or does not fit what was sent); see ``make_ext_hook``."""

    __slots__ = ("type_name", "reason")

    def __init__(self, type_name: str, reason: str):
        self.type_name = type_name
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.type_name} that cannot be rebuilt here>"


def find_placeholder(value: Any, target: Any, where: str, depth: int = 0) -> str | None:
    """Where ``target`` sits inside ``value`` (``where['items'][2]``), or None. Only run
    after a decode put a placeholder somewhere: it walks the whole value."""
    if value is target:
        return where
    if depth > 64:
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_placeholder(item, target, f"{where}[{i}]", depth + 1)
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if key is target:
                return f"{where} (a key)"
            found = find_placeholder(item, target, f"{where}[{key!r}]", depth + 1)
            if found:
                return found
    elif isinstance(value, (set, frozenset)):
        if target in value:
            return f"{where} (an element)"
    elif hasattr(value, "__dict__") or hasattr(value, "__struct_fields__"):
        names = getattr(value, "__struct_fields__", None) or list(getattr(value, "__dict__", ()))
        for name in names:
            found = find_placeholder(getattr(value, name, None), target, f"{where}.{name}",
                                     depth + 1)
            if found:
                return found
    return None


def make_ext_hook(allow_pickle: bool, importer: Any = None, may_import: bool = False,
                  exporter: Any = None, unknown: list | None = None
                  ) -> Callable[[int, memoryview], Any]:
    """The decoder hook for our extension types; pickle payloads only when allowed, shared
    memory only through an ``importer`` (``shm.Importer``); Enum, dataclass and Struct
    types from modules not yet imported only when ``may_import`` (the worker, which
    trusts its host; never the host).

    ``unknown``: an Enum, dataclass or Struct that cannot be rebuilt does not fail the
    whole decode; an ``Unrebuilt`` placeholder takes its place and is appended to this
    list, so that the receiver can fail just the message it belongs to (one call)."""
    decode = None

    def ext_hook(code: int, data: memoryview) -> Any:
        if code == TUPLE:
            return tuple(decode(data))
        if code == SET:
            return set(decode(data))
        if code == FROZENSET:
            return frozenset(decode(data))
        if code == BIGINT:
            return int.from_bytes(data, "little", signed=True)
        if code == COMPLEX:
            real, imag = decode(data)
            return complex(real, imag)
        if code == DICT:
            return {k: v for k, v in decode(data)}
        if code == BYTEARRAY:
            return bytearray(data)
        if code == DATETIME:
            iso, key, fold = decode(data)
            return _rebuild_tz(iso, key, _dt.datetime, fold)
        if code == DATE:
            return _dt.date.fromisoformat(bytes(data).decode())
        if code == TIME:
            iso, key, fold = decode(data)
            return _rebuild_tz(iso, key, _dt.time, fold)
        if code == TIMEDELTA:
            days, seconds, micros = decode(data)
            return _dt.timedelta(days, seconds, micros)
        if code == DECIMAL:
            import decimal

            return decimal.Decimal(bytes(data).decode())
        if code == UUID:
            import uuid

            return uuid.UUID(bytes=bytes(data))
        if code == NDARRAY:
            return _dec_ndarray(data, decode)
        if code == NPSCALAR:
            return _dec_npscalar(data, decode)
        if code == PATH:
            import pathlib

            kind, text = decode(data)
            cls = {"PurePosixPath": pathlib.PurePosixPath,
                   "PureWindowsPath": pathlib.PureWindowsPath}.get(kind, pathlib.Path)
            return cls(text)
        if code == SHM_ARRAY or code == SHM_BYTES:
            if importer is None:
                raise ValueError("a shared-memory value arrived on a channel without one")
            if code == SHM_BYTES:
                seg, offset, n, is_bytearray = decode(data)
                return importer.import_bytes(seg, offset, n, bytearray if is_bytearray else bytes)
            import numpy as np

            seg, offset, n, descr, shape, order, ours = decode(data)
            dtype = np.lib.format.descr_to_dtype(descr)
            if ours:  # the peer handed back memory of ours (an echo): no copy either way
                if exporter is None:
                    raise ValueError("a reference to our own shared memory arrived on a "
                                     "channel without shared memory")
                return exporter.own_array(seg, offset, n, dtype, tuple(shape), order)
            return importer.import_array(seg, offset, n, dtype, tuple(shape), order)
        if code == OBJECT:
            kind, module, qualname, state = decode(data)
            if unknown is None:
                return _rebuild_object(kind, _find_type(module, qualname, may_import), state)
            try:
                return _rebuild_object(kind, _find_type(module, qualname, may_import), state)
            except Exception as exc:  # noqa: BLE001 - this value only, not the whole message
                placeholder = Unrebuilt(f"{module}.{qualname}", str(exc))
                unknown.append(placeholder)
                return placeholder
        if code == TORCH:
            name, requires_grad, arr = decode(data)
            return _dec_torch(name, requires_grad, arr)
        if code == FILE:
            from ..types import File

            path, name, content_type = decode(data)
            return File(path, name, content_type)
        if code == REMOTE_FILE:
            import_file = getattr(importer, "import_file", None)
            if import_file is None:
                raise ValueError("a remote file arrived on a channel without blobs")
            index, name, content_type = decode(data)
            return import_file(index, name, content_type)
        if code == PICKLE:
            if not allow_pickle:
                raise ValueError("received a pickled value but pickle is not enabled")
            import pickle

            return pickle.loads(data)
        raise ValueError(f"unknown extension type {code}")

    def checked_ext_hook(code: int, data: memoryview) -> Any:
        try:
            return ext_hook(code, data)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - one error type for any malformed payload
            raise ValueError(f"malformed extension payload (type {code}): "
                             f"{type(exc).__name__}: {exc}") from exc

    decode = msgspec.msgpack.Decoder(ext_hook=checked_ext_hook).decode
    return checked_ext_hook


def make_decoder(kind: Any, allow_pickle: bool = False, importer: Any = None,
                 may_import: bool = False, exporter: Any = None,
                 unknown: list | None = None) -> msgspec.msgpack.Decoder:
    """A typed decoder for ``kind`` (a message union) that rebuilds our extension values
    (``importer``/``exporter``: the connection's two halves of shared memory; ``unknown``:
    see ``make_ext_hook``)."""
    return msgspec.msgpack.Decoder(kind, ext_hook=make_ext_hook(allow_pickle, importer,
                                                                may_import, exporter, unknown))


def make_encoder() -> msgspec.msgpack.Encoder:
    """The encoder for messages whose values already went through ``to_wire``."""
    return msgspec.msgpack.Encoder()


def from_wire_bytes(data: bytes, allow_pickle: bool = False, may_import: bool = False) -> Any:
    """Decode a standalone msgpack value (used by tests and tools)."""
    return msgspec.msgpack.Decoder(
        ext_hook=make_ext_hook(allow_pickle, may_import=may_import)).decode(data)


def encode_value(value: Any, allow_pickle: bool = False) -> bytes:
    """Encode a standalone value (used by tests and tools)."""
    return _packb(to_wire(value, allow_pickle=allow_pickle))
