"""Bundles: a program's files as one uncompressed tar, packed the same way every time.

``pack(path)`` (the client) makes the tar of a ``.py`` file or a folder with sorted
members, zero mtimes and owners, so the same files always give the same bytes and the same
blake3 hash (an upload the server already has is skipped). Caches and VCS folders are
left out. ``extract(tar, dest)`` (the server) accepts regular files and folders only, with
relative paths that stay inside ``dest``: an absolute path, a ``..`` part, a link (soft or
hard), a device, a FIFO or a sparse file is refused with ``UploadError`` naming the member,
before anything is written.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import UploadError

SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", "node_modules"})
MAX_MEMBERS = 100_000


def pack(path: str | os.PathLike) -> bytes:
    """The bundle of ``path``: a ``.py`` file (the bundle holds it under its own name) or a
    folder (its contents, without caches and VCS folders; symlinks are refused)."""
    root = Path(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if root.is_file():
            _add_file(tar, root, root.name)
        elif root.is_dir():
            for rel in _walk(root):
                full = root / rel
                if full.is_dir():
                    info = _info(rel.as_posix(), tarfile.DIRTYPE, 0o755)
                    tar.addfile(info)
                else:
                    _add_file(tar, full, rel.as_posix())
        else:
            raise FileNotFoundError(f"nothing to upload at {str(root)!r}: give a .py file "
                                    "or a folder")
    return buf.getvalue()


def _walk(root: Path) -> list[PurePosixPath]:
    out: list[PurePosixPath] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            full = base / name
            if full.is_symlink():
                raise UploadError(f"{full} is a symbolic link: a bundle holds regular files "
                                  "and folders only")
            if name.endswith((".pyc", ".pyo")):
                continue
            out.append(PurePosixPath(full.relative_to(root).as_posix()))
    return sorted(out, key=lambda p: p.parts)


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, full: Path, name: str) -> None:
    st = full.stat()
    if not stat.S_ISREG(st.st_mode):
        raise UploadError(f"{full} is not a regular file")
    mode = 0o755 if st.st_mode & 0o111 else 0o644
    with open(full, "rb") as f:
        tar.addfile(_info(name, tarfile.REGTYPE, mode, st.st_size), f)


def check_member(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted, or None."""
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts or "\\" in name:
        return "a path that leaves the bundle ('..')"
    if member.issym() or member.islnk():
        return "a link"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    if not (member.isreg() or member.isdir()):
        return f"an entry of tar type {member.type!r}"
    return None


def extract(fileobj: IO[bytes], dest: str | os.PathLike, max_bytes: int) -> int:
    """Check every member of the tar in ``fileobj``, then write them under ``dest`` (which
    must exist and be empty). Returns the bytes written; UploadError for a bad bundle."""
    dest = Path(dest)
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise UploadError(f"the bundle is not a tar archive: {exc}") from None
    with tar:
        try:
            members = tar.getmembers()
        except tarfile.TarError as exc:
            raise UploadError(f"the bundle is a damaged tar archive: {exc}") from None
        if len(members) > MAX_MEMBERS:
            raise UploadError(f"the bundle has {len(members)} members, more than "
                              f"{MAX_MEMBERS}")
        total = 0
        for member in members:
            why = check_member(member)
            if why is not None:
                raise UploadError(f"bundle member {member.name!r} is {why}: refused")
            total += member.size
        if total > max_bytes:
            raise UploadError(f"the bundle's files hold {total} bytes, more than the limit "
                              f"of {max_bytes}")
        for member in members:
            target = dest.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            mode = 0o755 if member.mode & 0o111 else 0o644
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             mode)
            except OSError as exc:  # a member twice, or a file where a folder is
                raise UploadError(f"bundle member {member.name!r} cannot be written: "
                                  f"{exc.strerror}") from None
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
        return total
