"""Value types of corral's own that cross between host and worker."""

from __future__ import annotations

import os
from typing import IO, Any


class File:
    """A file passed by reference.

    Between processes of one machine only the path crosses, never the bytes: the receiver
    opens the same file. ``name`` is the file's user-facing name (an upload's original
    filename, say) and ``content_type`` its media type, when known. A File is also a
    path-like object, so ``open(file)`` and ``numpy.load(file)`` accept it.
    """

    __slots__ = ("path", "name", "content_type")

    def __init__(self, path: str | os.PathLike, name: str | None = None,
                 content_type: str | None = None):
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise TypeError("corral.File needs a str path, not bytes")
        self.name = name if name is not None else os.path.basename(self.path)
        self.content_type = content_type

    def __fspath__(self) -> str:
        return self.path

    def open(self, mode: str = "rb") -> IO[Any]:
        return open(self.path, mode)

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    @property
    def size(self) -> int:
        return os.stat(self.path).st_size

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, File) and self.path == other.path and self.name == other.name
                and self.content_type == other.content_type)

    def __hash__(self) -> int:
        return hash((self.path, self.name, self.content_type))

    def __repr__(self) -> str:
        extra = f", content_type={self.content_type!r}" if self.content_type else ""
        return f"corral.File({self.path!r}, name={self.name!r}{extra})"
