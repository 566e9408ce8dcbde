"""Bundles and uploads, on their own: deterministic packing, safe extraction, checked chunks."""

import io
import os
import tarfile

import blake3
import pytest

from corral.remote import bundles
from corral.remote.errors import UploadError
from corral.remote.store import ProgramStore


def _tar(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


UNSAFE = [
    ("absolute path", _member("/etc/evil"), "an absolute path"),
    ("dot-dot", _member("a/../../evil"), "'..'"),
    ("symlink", _member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "a link"),
    ("hard link", _member("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), "a link"),
    ("char device", _member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "a device"),
    ("block device", _member("blk", tarfile.BLKTYPE, devmajor=8, devminor=0), "a device"),
    ("fifo", _member("fifo", tarfile.FIFOTYPE), "a FIFO"),
]


@pytest.mark.parametrize("case,member,why", UNSAFE, ids=[c[0] for c in UNSAFE])
def test_extraction_refuses_unsafe_members_before_writing_anything(tmp_path, case, member, why):
    data = _tar(_member("ok.py", data=b"print(1)"), member)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UploadError, match="refused") as info:
        bundles.extract(io.BytesIO(data), dest, 1 << 20)
    assert why in str(info.value)
    assert list(dest.iterdir()) == []


def test_extraction_refuses_a_member_twice_and_garbage(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(UploadError, match="cannot be written"):
        bundles.extract(io.BytesIO(_tar(_member("a.py"), _member("a.py"))), dest, 1 << 20)
    with pytest.raises(UploadError, match="not a tar"):
        bundles.extract(io.BytesIO(b"not a tar at all" * 100), tmp_path, 1 << 20)


def test_pack_is_deterministic_and_skips_caches(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    (tmp_path / "model.py").write_text("class M: pass\n")
    first = bundles.pack(tmp_path)
    os.utime(tmp_path / "model.py", (1, 1))
    assert bundles.pack(tmp_path) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert names == ["model.py", "pkg", "pkg/m.py"]
    (tmp_path / "link").symlink_to(tmp_path / "model.py")
    with pytest.raises(UploadError, match="symbolic link"):
        bundles.pack(tmp_path)


def test_upload_checks_order_duplicates_sizes_and_hash(tmp_path):
    store = ProgramStore(tmp_path, max_upload=1 << 20, max_chunk=1024)
    data = bundles.pack(__file__)
    digest = blake3.blake3(data).hexdigest()
    chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)]
    with pytest.raises(UploadError, match="exceeds the limit"):
        store.begin(digest, 2 << 20, 3000)
    with pytest.raises(UploadError, match="blake3"):
        store.begin("abc", len(data), len(chunks))
    up = store.begin(digest, len(data), len(chunks))
    with pytest.raises(UploadError, match="out of order: expected chunk 0"):
        up.add(1, chunks[1])
    up = store.begin(digest, len(data), len(chunks))
    up.add(0, chunks[0])
    with pytest.raises(UploadError, match="chunk 0 arrived twice"):
        up.add(0, chunks[0])
    up = store.begin(digest, len(data), 1)
    with pytest.raises(UploadError, match="per chunk"):
        up.add(0, data)
    up = store.begin("0" * 64, len(data), len(chunks))
    for i, c in enumerate(chunks):
        up.add(i, c)
    with pytest.raises(UploadError, match="hash mismatch"):
        up.finish()
    up = store.begin(digest, len(data), len(chunks))
    for i, c in enumerate(chunks):
        up.add(i, c)
    info = up.finish()
    assert info["program"] == digest and store.get(digest) is not None
    assert (store.path(digest) / os.path.basename(__file__)).is_file()
    assert os.listdir(store.uploads) == []  # nothing left of the uploads
