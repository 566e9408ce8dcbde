"""multipart/form-data prediction requests, streamed to disk.

``read_form(request, workspace)`` parses the body with python-multipart's push parser as it
arrives (``request.stream()``): each file part is written to its own file in the
prediction's workspace, at most ``FLUSH`` bytes buffered at a time and written from a
thread, so a large upload never sits whole in memory and never holds up the event loop.
(Starlette's own ``request.form()`` spools to anonymous temporary files that would then
have to be copied; this writes each upload once, where the worker will read it.)

The form's parts are the prediction's inputs: a text field is a string (the worker
converts ``"3"`` for an int parameter), a file part a ``corral.File`` with the client's
filename as its ``name`` (metadata only: the file on disk has a sanitised name, see
files.py) and the part's Content-Type. A part named ``input`` with the Content-Type
application/json holds a JSON object of further inputs. Repeated names make a list.

The body size limit is the BodyLimit middleware's (limits.py): its error passes through
here, and the caller removes the workspace.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from ..types import File
from .files import Workspace
from .jsonbody import strict_json

FLUSH = 1024 * 1024  # bytes of one upload buffered before they are written
MAX_FIELD_BYTES = 1024 * 1024
MAX_PARTS = 1000


class FormError(ValueError):
    """A multipart body that cannot be taken (answered 422)."""


@dataclass
class Form:
    """The inputs a form carried (``inputs`` for the runner, with Files) and what the
    prediction record shows of them (``shown``: uploads as their filenames)."""

    inputs: dict[str, Any] = field(default_factory=dict)
    shown: dict[str, Any] = field(default_factory=dict)


class _Part:
    __slots__ = ("name", "filename", "content_type", "data", "file", "path", "buffer")

    def __init__(self) -> None:
        self.name: str | None = None
        self.filename: str | None = None
        self.content_type = ""
        self.data = bytearray()  # a text field's value
        self.file: BinaryIO | None = None
        self.path = ""
        self.buffer = bytearray()  # an upload's bytes not written yet


async def read_form(request: Any, ws: Workspace) -> Form:
    """Parse ``request``'s multipart body, writing its files into ``ws``."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("the multipart Content-Type has no boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    parts: list[_Part] = []
    current = _Part()
    header: list[bytes] = [b"", b""]
    headers: dict[bytes, bytes] = {}
    ready: list[_Part] = []  # file parts with bytes to write or to close

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()
        headers.clear()
        if len(parts) >= MAX_PARTS:
            raise FormError(f"more than {MAX_PARTS} parts")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        headers[header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise FormError("a part's Content-Disposition has no name")
        current.name = _text(options[b"name"], charset)
        current.content_type = headers.get(b"content-type", b"").decode("latin-1").strip()
        if b"filename" in options:
            current.filename = _text(options[b"filename"], charset)
            current.path = ws.new_file(current.filename)
            current.file = open(current.path, "wb")  # noqa: SIM115 - closed in finally
        parts.append(current)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current.file is not None:
            current.buffer += data[start:end]
            if len(current.buffer) >= FLUSH and current not in ready:
                ready.append(current)
        else:
            current.data += data[start:end]
            if len(current.data) > MAX_FIELD_BYTES:
                raise FormError(f"the field {current.name!r} is over {MAX_FIELD_BYTES} bytes "
                                "(send it as a file part)")

    def on_part_end() -> None:
        if current.file is not None and current not in ready:
            ready.append(current)

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise FormError(f"the multipart body is malformed: {exc}") from None
            for part in ready:
                await _flush(part)
            ready.clear()
        if parser.state != MultipartState.END:  # the client stopped before the closing boundary
            raise FormError("the multipart body ended before its closing boundary")
    finally:
        for part in parts:
            if part.file is not None:
                part.file.close()
    return _form(parts, charset)


async def _flush(part: _Part) -> None:
    data, part.buffer = part.buffer, bytearray()
    if data:
        await asyncio.to_thread(part.file.write, data)  # type: ignore[union-attr]


def _form(parts: list[_Part], charset: str) -> Form:
    form = Form()
    given: dict[str, list[tuple[Any, Any]]] = {}
    for part in parts:
        assert part.name is not None
        if part.file is not None:
            value = File(part.path, name=part.filename, content_type=part.content_type or None)
            given.setdefault(part.name, []).append((value, part.filename))
            continue
        text = _text(bytes(part.data), charset)
        if part.name == "input" and part.content_type.split(";")[0].strip() \
                == "application/json":
            try:
                extra = strict_json(text)
            except (ValueError, RecursionError):  # (NaN and Infinity too)
                raise FormError("the 'input' part is not valid JSON") from None
            if not isinstance(extra, dict):
                raise FormError("the 'input' part must be a JSON object")
            for name, value in extra.items():
                given.setdefault(name, []).append((value, value))
            continue
        given.setdefault(part.name, []).append((text, text))
    for name, values in given.items():
        if len(values) == 1:
            form.inputs[name], form.shown[name] = values[0]
        else:
            form.inputs[name] = [v for v, _ in values]
            form.shown[name] = [s for _, s in values]
    return form


def _text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise FormError(f"a part's name or value is not valid {charset}") from None
