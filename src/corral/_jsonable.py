"""One helper that turns a prediction's output into JSON-ready values (server and CLI).

Needs nothing beyond the standard library: the CLI imports it without the server's stack.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import math
import mimetypes
import os
import pathlib
import uuid
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready builtins: bytes become ``data:`` URLs (base64), numpy arrays
    and scalars and torch tensors become lists and numbers, tuples and sets lists,
    datetimes ISO strings, Decimals strings, Enums their values, dataclasses and msgspec
    Structs dicts, paths (``corral.File`` too) ``data:`` URLs of the file's content. Floats
    that JSON cannot hold (NaN, infinities) become None."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return data_url(bytes(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, os.PathLike):
        path = pathlib.Path(os.fspath(value))
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return data_url(path.read_bytes(), mime)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    struct_fields = getattr(type(value), "__struct_fields__", None)
    if struct_fields is not None:  # a msgspec Struct
        return {name: jsonable(getattr(value, name)) for name in struct_fields}
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def data_url(data: bytes, mime: str = "application/octet-stream") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
