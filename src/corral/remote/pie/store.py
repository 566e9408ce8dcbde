"""Installed PIE programs (name@version, on disk) and chunked uploads (both directions).

A program is kept as ``<root>/<name>/<version>.py`` with ``.toml`` (its manifest) and
``.json`` (its blake3 and who installed it), so programs survive a restart as under PIE.
Only the identity that installed a program may overwrite it (``force_overwrite``).
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import threading
from pathlib import Path

import blake3
import msgspec

from .manifest import InvalidManifest, Manifest, parse


class UploadError(ValueError):
    """A chunked upload went wrong (order, count, size or hash)."""


class Assembly:
    """One chunked payload: chunks in order from 0, hashed as they come (blake3)."""

    def __init__(self, declared_hash: str, total_chunks: int, cap: int, what: str):
        if not isinstance(total_chunks, int) or total_chunks < 1:
            raise UploadError(f"{what}: total_chunks must be >= 1, not {total_chunks}")
        self.declared = declared_hash.lower()
        self.total = total_chunks
        self.cap = cap
        self.what = what
        self.next = 0
        self.size = 0
        self._hasher = blake3.blake3()
        self._parts: list[bytes] = []

    def feed(self, index: int, total: int, data: bytes) -> bytes | None:
        """Add one chunk; the whole payload once the last one is in (hash checked)."""
        if not self.pass_on(index, total, data):
            self._parts.append(data)
            return None
        self._parts.append(data)
        # One allocation of the final size: growing a bytearray re-copies (and, on these
        # machines, page-faults) the payload several times over.
        payload = b"".join(self._parts)
        self._parts = []
        return payload

    def pass_on(self, index: int, total: int, data: bytes) -> bool:
        """Check and hash one chunk that the caller passes on instead of keeping; True
        once the last one is in and the whole payload's hash matched."""
        if self.next == 0 and index != 0:
            raise UploadError(f"{self.what}: First chunk index must be 0, got {index}")
        if total != self.total:
            raise UploadError(f"{self.what}: Chunk count mismatch: {total} after {self.total}")
        if index != self.next:
            raise UploadError(f"{self.what}: Out-of-order chunk: expected {self.next}, "
                              f"got {index}")
        self.size += len(data)
        if self.size > self.cap:
            raise UploadError(f"{self.what}: upload exceeds the cap of {self.cap} bytes")
        self._hasher.update(data)
        self.next += 1
        if self.next < self.total:
            return False
        got = self._hasher.hexdigest()
        if got != self.declared:
            raise UploadError(f"{self.what}: hash mismatch: declared {self.declared}, "
                              f"uploaded {got}")
        return True


class Program(msgspec.Struct, frozen=True):
    manifest: Manifest
    source: str
    hash: str
    owner: str

    @property
    def name(self) -> str:
        return self.manifest.name


class _Meta(msgspec.Struct):
    hash: str
    owner: str


def check_source(source_bytes: bytes, manifest: Manifest) -> str:
    """The program's source as text, compiled (not run) and with its entry defined."""
    try:
        source = source_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidManifest(f"the program is not UTF-8 Python source: {exc}") from None
    try:
        tree = ast.parse(source, f"{manifest.name}.py")
    except SyntaxError as exc:
        raise InvalidManifest(f"the program does not compile: {exc.msg} "
                              f"(line {exc.lineno})") from None
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef,
                                                           ast.AsyncFunctionDef))}
    if manifest.entry not in defined:
        raise InvalidManifest(f"the program defines no top-level function "
                              f"{manifest.entry!r} ([runtime] entry)")
    return source


class ProgramStore:
    """Programs by name and version, on disk under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], Program] = {}

    def _paths(self, name: str, version: str) -> tuple[Path, Path, Path]:
        base = self.root / name
        return base / f"{version}.py", base / f"{version}.toml", base / f"{version}.json"

    def get(self, name: str, version: str) -> Program | None:
        key = (name, version)
        prog = self._cache.get(key)
        if prog is not None:
            return prog
        py, toml, meta = self._paths(name, version)
        try:
            source = py.read_text("utf-8")
            manifest = parse(toml.read_text("utf-8"))
            info = msgspec.json.decode(meta.read_bytes(), type=_Meta)
        except (OSError, InvalidManifest, msgspec.DecodeError, UnicodeDecodeError):
            return None
        prog = Program(manifest, source, info.hash, info.owner)
        self._cache[key] = prog
        return prog

    def latest(self, name: str) -> Program | None:
        """The most recently installed version of ``name``."""
        try:
            metas = sorted((self.root / name).glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return None
        for meta in reversed(metas):
            prog = self.get(name, meta.stem)
            if prog is not None:
                return prog
        return None

    def add(self, manifest: Manifest, manifest_text: str, source: str, digest: str,
            owner: str, force: bool) -> str:
        """Install; returns PIE's answer text. Raises InvalidManifest when refused."""
        with self._lock:
            have = self.get(manifest.name, manifest.version)
            if have is not None:
                if have.hash == digest and have.owner == owner:
                    return "Program already installed"
                if not force:
                    raise InvalidManifest(f"{manifest.program} is already installed with "
                                          "other contents (force_overwrite replaces it)")
                if have.owner != owner:
                    raise InvalidManifest(f"{manifest.program} was installed by another "
                                          "identity; only it may overwrite it")
            py, toml, meta = self._paths(manifest.name, manifest.version)
            py.parent.mkdir(parents=True, exist_ok=True)
            for path, data in ((py, source.encode()), (toml, manifest_text.encode()),
                               (meta, json.dumps({"hash": digest, "owner": owner}).encode())):
                _write_atomic(path, data)
            self._cache[(manifest.name, manifest.version)] = Program(manifest, source,
                                                                     digest, owner)
            return "Program installed successfully"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
