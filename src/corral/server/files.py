"""Files of the HTTP server: input files saved for a prediction, output files sent back.

One directory per app (``Files.root``, removed when the app shuts down)::

    root/work/<token>/<n>/<safe name>   a prediction's input files (its *workspace*)
    root/served/<id>                    output files served at GET /files/{id}

**Inputs.** A parameter typed ``corral.File`` or ``pathlib.Path`` (the input schema says
``"format": "uri"``, also inside ``Optional``, lists, tuples, dicts and Structs) takes a ``data:`` URL in the
JSON body, an http(s) URL, or a multipart upload (uploads.py). Either is written to a file of the
prediction's workspace and reaches the worker as a ``corral.File`` with the upload's name
and content type (a Path parameter gets its path). The client's filename is metadata only:
the file on disk gets a sanitised copy of it inside a directory of its own. Any other
http(s) URL is fetched into the workspace as Cog does (fetch.py: public addresses only,
unless the operator allows networks; size-capped; every redirect checked), unless the app
was made with ``fetch_inputs=False``. Any other string there is a 422: a server path is
never read.

**Outputs.** A File or Path in the output (also inside lists, tuples, dicts, and stream
chunks) becomes a ``data:`` URL (``file_outputs="data"``, Cog's default), or a link
``<base>/files/<id>`` when ``file_outputs="url"`` or the file is larger than
``inline_max`` bytes. A linked file is moved (when the prediction's workspace holds it)
or copied into ``root/served`` and deleted ``retention`` seconds later, or at shutdown.

**Who deletes what.** The server deletes what it created: a prediction's workspace when
the prediction ends, whatever the outcome (succeeded, failed, canceled, its worker
crashed, or refused before it ran), and served files when they expire. An output file
inside the workspace (next to an input file) is the server's too: it is moved, not
copied. Files a predictor returns from anywhere else stay its own: they are copied, never
moved or deleted (a model may return the same cached file to every caller), and cleaning
them up is the predictor's business.
"""

from __future__ import annotations

import asyncio
import binascii
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from .._jsonable import data_url
from ..types import File
from .retention import Retention

#: Output files up to this size come back inline as data: URLs; bigger ones as links.
DEFAULT_INLINE_MAX = 8 * 1024 * 1024
FILE_OUTPUT_MODES = ("data", "url")
_CHUNK = 4 * 1024 * 1024  # base64 characters decoded per step (a multiple of 4)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 tchar
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")


class FileInputError(ValueError):
    """A file input that cannot be taken: ``loc`` is where it is in the input."""

    def __init__(self, loc: list[Any], msg: str):
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


class OutputFileError(Exception):
    """An output names a file that cannot be read (it fails the prediction)."""


def safe_name(filename: str | None, default: str = "upload") -> str:
    """A name for the file on disk from a client's ``filename``: its last path component
    only (either slash), characters outside ``[A-Za-z0-9._-]`` replaced, no leading dot,
    at most 100 characters. ``"../../etc/passwd"`` gives ``"passwd"``."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE.sub("_", base).lstrip(".")[-100:]
    return base or default


def file_fields(input_schema: dict[str, Any] | None) -> dict[str, tuple[Any, dict]]:
    """The parameters of an input schema that hold a file anywhere (``Path``, but also
    ``list[list[Path]]``, ``dict[str, Path]``, a tuple or a Struct with one): name -> its
    schema and the schema's ``$defs``. Every string in such a place must be a data: URL:
    the worker turns any string there into a path, so one left as it is would be a path
    on the server."""
    schema = input_schema or {}
    defs = schema.get("$defs") or {}
    return {name: (prop, defs) for name, prop in (schema.get("properties") or {}).items()
            if _holds_files(prop, defs, set())}


def _is_file(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("format") == "uri" \
        and schema.get("type") == "string"


def _deref(schema: Any, defs: dict) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return defs.get(ref[len("#/$defs/"):], {})
    return schema


def _children(schema: dict) -> list[Any]:
    found = [*(schema.get("anyOf") or ()), *(schema.get("oneOf") or ()),
             *(schema.get("prefixItems") or ()), *(schema.get("properties") or {}).values()]
    found += [schema[key] for key in ("items", "additionalProperties")
              if isinstance(schema.get(key), dict)]
    return found


def _holds_files(schema: Any, defs: dict, seen: set[str]) -> bool:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref is not None:
        if ref in seen:  # a recursive Struct: looked at already
            return False
        seen.add(ref)
    schema = _deref(schema, defs)
    if not isinstance(schema, dict):
        return False
    return _is_file(schema) or any(_holds_files(c, defs, seen) for c in _children(schema))


def _member_for(value: Any, schema: dict, defs: dict) -> Any:
    """The member of a union (anyOf/oneOf) that ``value`` goes by: a file for a string
    when any member takes one, else the first array (list) or object (dict) member."""
    members = [_deref(m, defs) for m in schema.get("anyOf") or schema.get("oneOf") or ()]
    if isinstance(value, str):
        return next((m for m in members if _is_file(m)), schema)
    want = "array" if isinstance(value, list) else "object" if isinstance(value, dict) \
        else None
    return next((m for m in members if isinstance(m, dict) and m.get("type") == want),
                schema)


def decode_data_url(url: str, path: str) -> str:
    """Write the bytes of ``data:[<type>][;base64],<data>`` to ``path``; its media type.
    Raises ValueError saying what is wrong. Base64 is decoded a slice at a time, so the
    decoded bytes never sit whole in memory next to the text."""
    head, comma, _ = url.partition(",")
    if not head.startswith("data:") or not comma:
        raise ValueError("a data: URL needs the form data:[<type>][;base64],<data>")
    params = head[5:].split(";")
    mime = params[0].strip() or "application/octet-stream"
    if not _MEDIA_TYPE.fullmatch(mime):
        # It becomes the File's content_type, and a header when served again: tokens only.
        raise ValueError(f"the data: URL's media type {mime[:100]!r} is not type/subtype "
                         "(each an RFC 9110 token)")
    start = len(head) + 1
    with open(path, "wb") as f:
        if "base64" in (p.strip().lower() for p in params[1:]):
            # Whitespace is not valid in a data URL's base64; padding only at the end.
            for i in range(start, len(url), _CHUNK):
                try:
                    f.write(binascii.a2b_base64(url[i:i + _CHUNK].encode("ascii"),
                                                strict_mode=True))
                except (binascii.Error, UnicodeEncodeError):
                    raise ValueError("the data: URL's base64 is not valid") from None
        else:
            f.write(urllib.parse.unquote_to_bytes(url[start:]))
    return mime


def _extension(mime: str) -> str:
    return mimetypes.guess_extension(mime, strict=False) or ""


class Workspace:
    """One prediction's input files, and the base URL its output links use (``base``: a
    callable, asked only when a link is made). The directory is made on first use (a
    prediction without files costs no system call) and removed by ``close()``."""

    def __init__(self, parent: str, base: Callable[[], str] | None = None):
        self._parent = parent
        self._base = base
        self.path: str | None = None
        self.taken = False  # a prediction record owns it now (and removes it when done)
        self.sent: dict[str, str] = {}  # output path -> its link, for files moved out
        self._count = 0

    @property
    def base_url(self) -> str:
        return self._base() if self._base is not None else ""

    def directory(self) -> str:
        if self.path is None:
            self.path = tempfile.mkdtemp(dir=self._parent)
        return self.path

    def new_file(self, filename: str | None, default: str = "upload") -> str:
        """A fresh path for a file named after ``filename`` (sanitised), in a directory of
        its own so that two uploads of one name never collide."""
        self._count += 1
        folder = os.path.join(self.directory(), str(self._count))
        os.mkdir(folder)
        return os.path.join(folder, safe_name(filename, default))

    def owns(self, path: str) -> bool:
        if self.path is None:
            return False
        real = os.path.realpath(path)
        return real.startswith(os.path.realpath(self.path) + os.sep)

    def close(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class ServedFile:
    path: str
    name: str
    content_type: str


class FileStore:
    """Output files served at /files/{id}, each deleted ``retention`` seconds after it
    was stored (checked on every fetch, and by ``sweep()`` which the app runs on a timer;
    both on the event loop, while ``add()`` runs in threads, so ``add()`` never sweeps)."""

    def __init__(self, directory: str, retention: Retention):
        self.directory = directory
        self.retention = retention
        self.entries: dict[str, ServedFile] = {}

    def add(self, source: str, name: str, content_type: str, move: bool) -> str:
        """Store ``source`` (moved when ``move``, else copied); its id."""
        file_id = secrets.token_urlsafe(18)
        target = os.path.join(self.directory, file_id)
        if move:
            # The file itself, not a symlink to it: whatever it points at in the workspace
            # is deleted with the workspace.
            os.replace(os.path.realpath(source), target)
        else:
            shutil.copyfile(source, target)
        self.entries[file_id] = ServedFile(target, name, content_type)
        self.retention.finished(file_id)
        return file_id

    def get(self, file_id: str) -> ServedFile | None:
        self.sweep()
        return self.entries.get(file_id)

    def sweep(self) -> None:
        """Delete the files whose time is up."""
        for file_id in self.retention.prune(self.entries):
            try:
                os.unlink(os.path.join(self.directory, file_id))
            except FileNotFoundError:
                pass


class Files:
    """The file handling of one app: workspaces, input files, output files, /files."""

    def __init__(self, *, mode: str = "data", inline_max: int = DEFAULT_INLINE_MAX,
                 retention: float = 600.0, max_files: int = 100_000,
                 clock: Callable[[], float] = time.monotonic, fetcher: Any = None):
        if mode not in FILE_OUTPUT_MODES:
            raise ValueError(f"file_outputs must be one of {FILE_OUTPUT_MODES}, not {mode!r}")
        self.mode = mode
        self.inline_max = inline_max
        self.root = self.work = ""
        self.store = FileStore("", Retention(retention, max_files, clock))
        #: Fetches http(s) URL inputs (fetch.InputFetcher); None: they are refused.
        self.fetcher = fetcher
        #: The file parameters (``file_fields``): set once the input schema is known.
        self.fields: dict[str, tuple[Any, dict]] | None = None

    def open(self) -> None:
        """Make the directories (when the app starts: an app never started leaves none)."""
        self.root = tempfile.mkdtemp(prefix="corral-server-")
        self.work = os.path.join(self.root, "work")
        os.mkdir(self.work)
        self.store.directory = os.path.join(self.root, "served")
        os.mkdir(self.store.directory)

    def workspace(self, base: Callable[[], str] | None = None) -> Workspace:
        return Workspace(self.work, base)

    def close(self) -> None:
        """Remove everything: served files and workspaces left (at shutdown)."""
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- inputs ------------------------------------------------------------------------

    async def resolve(self, inputs: dict[str, Any], ws: Workspace,
                      fields: dict[str, tuple[Any, dict]] | None = None) -> dict[str, Any]:
        """``inputs`` with each data: URL in a file's place (``fields``, default: the
        predict method's) written to ``ws`` and replaced by a File; raises FileInputError
        for any other string there."""
        fields = (self.fields if fields is None else fields) or {}
        if not fields:
            return inputs
        out = dict(inputs)
        for name, (schema, defs) in fields.items():
            if name in inputs:
                out[name] = await self._resolve_in(inputs[name], schema, defs, ws, [name])
        return out

    async def _resolve_in(self, value: Any, schema: Any, defs: dict, ws: Workspace,
                          loc: list[Any]) -> Any:
        schema = _deref(schema, defs)
        if not isinstance(schema, dict):
            return value
        schema = _deref(_member_for(value, schema, defs), defs)
        if isinstance(value, str):
            return await self._resolve_one(value, ws, loc) if _is_file(schema) else value
        if isinstance(value, list):
            prefix = schema.get("prefixItems") or []
            items = schema.get("items")
            return [await self._resolve_in(v, prefix[i] if i < len(prefix) else items,
                                           defs, ws, [*loc, i])
                    for i, v in enumerate(value)]
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            return {k: await self._resolve_in(v, props.get(k, extra), defs, ws, [*loc, k])
                    for k, v in value.items()}
        return value

    async def _resolve_one(self, value: str, ws: Workspace, loc: list[Any]) -> File:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme in ("http", "https"):
            return await self._fetch(value, ws, loc)
        if scheme != "data":
            raise FileInputError(loc, "a file input must be a data: URL or a multipart "
                                      "upload (a path on the server is never read)")
        mime = value[5:value.find(",")].split(";")[0].strip() or "application/octet-stream"
        ext = _extension(mime) if _MEDIA_TYPE.fullmatch(mime) else ""
        path = ws.new_file("input" + ext, "input")
        try:
            mime = await asyncio.to_thread(decode_data_url, value, path)
        except ValueError as exc:
            raise FileInputError(loc, str(exc)) from None
        return File(path, name=os.path.basename(path), content_type=mime)

    async def _fetch(self, url: str, ws: Workspace, loc: list[Any]) -> File:
        from .outbound import OutboundRefused

        if self.fetcher is None:
            raise FileInputError(loc, "http(s) URLs are not fetched by this server; send the "
                                      "file as a data: URL or a multipart upload")
        name = self.fetcher.suggested_name(url)
        path = ws.new_file(name or "input", "input")
        try:
            got = await self.fetcher.fetch(url, path)
        except OutboundRefused as exc:
            raise FileInputError(loc, str(exc)) from None
        if not os.path.splitext(path)[1]:  # the URL named no extension: the media type's
            typed = path + _extension(got.content_type)
            if typed != path:
                os.rename(path, typed)
                path = typed
        return File(path, name=os.path.basename(path), content_type=got.content_type)

    # -- outputs -----------------------------------------------------------------------

    async def outputs(self, value: Any, ws: Workspace | None) -> Any:
        """``value`` with every File/Path in it turned into a data: URL or a link (in a
        thread: reading and encoding a file must not hold up the event loop)."""
        if not has_files(value):
            return value
        return await asyncio.to_thread(self._convert, value, ws)

    def _convert(self, value: Any, ws: Workspace | None) -> Any:
        if isinstance(value, dict):
            return {k: self._convert(v, ws) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._convert(v, ws) for v in value]
        if isinstance(value, os.PathLike):
            # A file moved out of the workspace is gone: given again, it is the same link.
            # Any other file is read anew each time (a stream may rewrite one per chunk).
            key = os.fspath(value)
            if ws is not None and key in ws.sent:
                return ws.sent[key]
            return self._one(value, ws)
        return value

    def _one(self, value: os.PathLike, ws: Workspace | None) -> str:
        path = os.fspath(value)
        name = getattr(value, "name", None) or os.path.basename(path)
        mime = getattr(value, "content_type", None) or mimetypes.guess_type(name)[0] \
            or "application/octet-stream"
        try:
            size = os.stat(path).st_size
            if not os.path.isfile(path):
                raise OutputFileError(f"the output {name!r} is not a regular file")
            if self.mode == "data" and size <= self.inline_max:
                with open(path, "rb") as f:
                    return data_url(f.read(), mime)
            owned = ws is not None and ws.owns(path)
            file_id = self.store.add(path, name, mime, move=owned)
            base = ws.base_url if ws is not None else ""
            link = f"{base.rstrip('/')}/files/{file_id}"
            if owned:
                ws.sent[path] = link  # type: ignore[union-attr]
            return link
        except OSError as exc:
            # (its name only: the server's paths are not the client's business)
            raise OutputFileError(f"the output file {name!r} cannot be read: "
                                  f"{exc.strerror or 'error'}") from None


#: data: URL inputs up to this many characters stay in the record as they were sent.
SHOWN_DATA_URL_MAX = 1024


def shown_inputs(inputs: Any, resolved: Any) -> Any:
    """What a prediction record shows of ``inputs``: each data: URL longer than
    ``SHOWN_DATA_URL_MAX`` replaced by a short placeholder naming the file it was saved
    as and its size (``resolved`` holds the File there), so that the record never keeps
    a large input's text alive."""
    if isinstance(inputs, str):
        if len(inputs) > SHOWN_DATA_URL_MAX and inputs.startswith("data:") \
                and isinstance(resolved, File):
            try:
                size = os.stat(resolved).st_size
            except OSError:
                size = None
            return f"data: URL ({len(inputs)} characters) saved as {resolved.name}" \
                   f"{f' ({size} bytes)' if size is not None else ''}"
        return inputs
    if isinstance(inputs, dict) and isinstance(resolved, dict):
        return {k: shown_inputs(v, resolved.get(k)) for k, v in inputs.items()}
    if isinstance(inputs, list) and isinstance(resolved, list) \
            and len(inputs) == len(resolved):
        return [shown_inputs(v, r) for v, r in zip(inputs, resolved)]
    return inputs


def has_files(value: Any) -> bool:
    """Whether a File or Path sits anywhere in ``value`` (lists, tuples, dict values)."""
    if isinstance(value, (str, bytes, int, float, type(None))):
        return False
    if isinstance(value, os.PathLike):
        return True
    if isinstance(value, dict):
        return any(has_files(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_files(v) for v in value)
    return False
