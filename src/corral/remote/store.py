"""Programs on disk, content-addressed by blake3, and the uploads that bring them.

Layout under ``root`` (``corral host --store``)::

    programs/<blake3 hex>/      the extracted bundle (read by workers as their cwd)
    programs/<blake3 hex>.json  its description, written last: a program exists once it does
    uploads/                    uploads in progress (removed when they end, either way)

A program survives a restart of the server: ``get()`` reads the disk. An upload is
checked as it arrives: chunks in order, each at most ``max_chunk`` bytes, at most
``max_upload`` in all and exactly the announced size, then the hash; only then is the
bundle extracted (bundles.extract refuses unsafe members), into a temporary folder that is
renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import blake3

from . import bundles
from .errors import UploadError

HASH = re.compile(r"^[0-9a-f]{64}$")


class ProgramStore:
    def __init__(self, root: str | os.PathLike, *, max_upload: int, max_chunk: int):
        self.root = Path(root).resolve()
        self.programs = self.root / "programs"
        self.uploads = self.root / "uploads"
        self.programs.mkdir(parents=True, exist_ok=True)
        if self.uploads.exists():  # leftovers of a server that was killed
            shutil.rmtree(self.uploads, ignore_errors=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.max_upload = max_upload
        self.max_chunk = max_chunk
        self._lock = threading.Lock()

    def get(self, program: str) -> dict[str, Any] | None:
        """The description of ``program`` (its hash), or None when the store lacks it."""
        if not isinstance(program, str) or not HASH.match(program):
            return None
        try:
            with open(self.programs / f"{program}.json", encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def path(self, program: str) -> Path:
        return self.programs / program

    def list(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.programs.glob("*.json")):
            info = self.get(p.stem)
            if info is not None:
                out.append(info)
        return out

    def begin(self, digest: str, size: int, chunks: int, name: str = "") -> "Upload":
        """A new upload; UploadError when its announced shape breaks a limit."""
        if not isinstance(digest, str) or not HASH.match(digest):
            raise UploadError(f"the upload's hash must be 64 lowercase hex digits (blake3), "
                              f"not {digest!r}")
        if size <= 0 or chunks <= 0 or chunks > size:
            raise UploadError(f"an upload of {size} bytes cannot come in {chunks} chunks "
                              "(a bundle is a tar: never empty)")
        if size > self.max_upload:
            raise UploadError(f"the upload of {size} bytes exceeds the limit of "
                              f"{self.max_upload} bytes (--max-upload)")
        return Upload(self, digest, size, chunks, name)

    def _install(self, upload: "Upload") -> dict[str, Any]:
        final = self.path(upload.digest)
        with self._lock:
            existing = self.get(upload.digest)
            if existing is not None:
                return existing
            tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=self.uploads))
            try:
                with open(upload.file, "rb") as f:
                    files_bytes = bundles.extract(f, tmp, self.max_upload)
                if final.exists():  # a half-installed one (a kill between rename and json)
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            info = {"program": upload.digest, "name": upload.name, "size": upload.size,
                    "files_bytes": files_bytes, "created": time.time(),
                    "manifest": (final / "corral.toml").is_file()}
            tmp_json = self.uploads / f"{upload.digest}.json.tmp"
            tmp_json.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp_json, self.programs / f"{upload.digest}.json")
            return info


class Upload:
    """One upload in progress: ``add(index, data)`` per chunk, then ``finish()``."""

    def __init__(self, store: ProgramStore, digest: str, size: int, chunks: int, name: str):
        self.store = store
        self.digest = digest
        self.size = size
        self.chunks = chunks
        self.name = name
        self.received = 0
        self.bytes = 0
        self._hasher = blake3.blake3()
        fd, self.file = tempfile.mkstemp(prefix="upload-", dir=store.uploads)
        self._out = os.fdopen(fd, "wb")
        self.closed = False

    @property
    def complete(self) -> bool:
        return self.received == self.chunks

    def add(self, index: int, data: bytes) -> bool:
        """Take chunk ``index``; True once every chunk is in (then call ``finish()``).
        UploadError (and the upload is over) for a chunk out of order, twice, too big, or
        past the announced size."""
        try:
            if index < self.received:
                raise UploadError(f"chunk {index} arrived twice (chunks 0-{self.received - 1} "
                                  "are in already)")
            if index != self.received:
                raise UploadError(f"chunk {index} arrived out of order: expected chunk "
                                  f"{self.received}")
            if index >= self.chunks:
                raise UploadError(f"chunk {index} is beyond the {self.chunks} chunks announced")
            if len(data) > self.store.max_chunk:
                raise UploadError(f"chunk {index} has {len(data)} bytes, more than the limit "
                                  f"of {self.store.max_chunk} bytes per chunk (--max-chunk)")
            if self.bytes + len(data) > self.size:
                raise UploadError(f"chunk {index} takes the upload past the {self.size} bytes "
                                  "announced")
            self._hasher.update(data)
            self._out.write(data)
            self.bytes += len(data)
            self.received += 1
            return self.complete
        except BaseException:
            self.close()
            raise

    def finish(self) -> dict[str, Any]:
        """Check the size and the hash, extract and install the program (blocking: a
        thread); its description. UploadError when refused. The upload is over after it."""
        try:
            self._out.close()
            if self.bytes != self.size:
                raise UploadError(f"the upload ended after {self.bytes} of the {self.size} "
                                  "bytes announced")
            got = self._hasher.hexdigest()
            if got != self.digest:
                raise UploadError(f"hash mismatch: the upload was announced as blake3 "
                                  f"{self.digest}, its bytes hash to {got}")
            return self.store._install(self)
        finally:
            self.close()

    def close(self) -> None:
        """End the upload and remove its temporary file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._out.close()
        finally:
            try:
                os.unlink(self.file)
            except FileNotFoundError:
                pass
