"""The PIE protocol's pure parts as tables: identities, manifests, chunk assembly, frames."""

from __future__ import annotations

import blake3
import msgpack
import pytest

from corral.remote.pie import frames as f
from corral.remote.pie.endpoint import split_identity
from corral.remote.pie.manifest import InvalidManifest, parse
from corral.remote.pie.store import Assembly, UploadError, check_source


@pytest.mark.parametrize("raw, identity, secret", [
    ("acme/alice", "acme/alice", None),
    ("alice", "default/alice", None),
    ("alice:tok", "default/alice", "tok"),
    ("acme/alice:to:ken", "acme/alice", "to:ken"),
    ("/alice", "default/alice", None),
    (" acme / bob ", "acme/bob", None),
])
def test_identities(raw, identity, secret):
    assert split_identity(raw) == (identity, secret)


@pytest.mark.parametrize("raw", ["", "acme/", "   ", ":tok", "acme/:tok"])
def test_an_identity_without_a_user_is_refused(raw):
    with pytest.raises(ValueError, match="no user"):
        split_identity(raw)


BASE = '[package]\nname = "p"\nversion = "1.0"\n[runtime]\nlanguage = "python"\n'


@pytest.mark.parametrize("deps, requirements", [
    ('a = "1.2"', ("a==1.2",)),
    ('a = ">=1,<2"', ("a>=1,<2",)),
    ('a = "*"\nb = ""', ("a", "b")),
    ('b = "~=2.1"\na-b = "3"', ("a-b==3", "b~=2.1")),
])
def test_dependencies_become_requirement_lines(deps, requirements):
    m = parse(BASE + "[dependencies]\n" + deps + "\n")
    assert m.dependencies == requirements
    assert (m.name, m.version, m.entry, m.call) == ("p", "1.0", "main", "input")


@pytest.mark.parametrize("text, problem", [
    ("[package\n", "not TOML"),
    ('[runtime]\nlanguage = "python"\n', "[package] name must be"),
    (BASE.replace('language = "python"', 'language = "javascript"'), "'javascript' is not"),
    (BASE.replace('language = "python"\n', ""), "not wasm components"),
    (BASE + 'entry = "no such"\n', "entry must be a function name"),
    (BASE + 'call = "argv"\n', 'call must be "input" or "kwargs"'),
    (BASE + 'gpu = true\n', "unknown keys: gpu"),
    (BASE.replace('"p"', '"../etc"'), "[package] name must be"),
    (BASE.replace('"1.0"', '"1/0"'), "[package] version must be"),
    (BASE + '[dependencies]\n"a;rm" = "1"\n', "is not a package name"),
    (BASE + '[dependencies]\na = "1; os_name"\n', "must map to a version string"),
    (BASE + '[dependencies]\na = 1\n', "must map to a version string"),
])
def test_a_bad_manifest_names_what_is_wrong(text, problem):
    with pytest.raises(InvalidManifest) as info:
        parse(text)
    assert problem in str(info.value)


def test_every_manifest_problem_is_named_at_once():
    with pytest.raises(InvalidManifest) as info:
        parse('[runtime]\nlanguage = "rust"\ncall = "x"\n')
    text = str(info.value)
    assert "name must" in text and "version must" in text and "'rust'" in text and \
        "call must" in text


@pytest.mark.parametrize("source, problem", [
    (b"def main(:\n", "does not compile"),
    (b"x = 1\n", "no top-level function 'main'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_program_that_cannot_run_is_refused_at_install(source, problem):
    with pytest.raises(InvalidManifest, match=problem):
        check_source(source, parse(BASE))


def feed_all(data: bytes, size: int, digest: str | None = None, cap: int = 1 << 20):
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    a = Assembly(digest or blake3.blake3(data).hexdigest(), len(chunks), cap, "t")
    out = [a.feed(i, len(chunks), c) for i, c in enumerate(chunks)]
    return out


@pytest.mark.parametrize("data, size", [(b"", 4), (b"abc", 4), (b"abcdefgh", 4),
                                        (bytes(range(256)) * 9, 100)])
def test_chunks_reassemble_and_check_the_hash(data, size):
    out = feed_all(data, size)
    assert out[:-1] == [None] * (len(out) - 1) and out[-1] == data


@pytest.mark.parametrize("steps, problem", [
    ([(1, 2, b"x")], "First chunk index must be 0"),
    ([(0, 3, b"x"), (2, 3, b"x")], "Out-of-order chunk: expected 1, got 2"),
    ([(0, 3, b"x"), (0, 3, b"x")], "Out-of-order chunk: expected 1, got 0"),
    ([(0, 2, b"x"), (1, 5, b"x")], "Chunk count mismatch"),
    ([(0, 2, b"x" * 6)], "exceeds the cap of 5 bytes"),
])
def test_chunks_out_of_order_or_too_many_are_refused(steps, problem):
    a = Assembly("00", steps[0][1], 5, "t")
    with pytest.raises(UploadError, match=problem):
        for index, total, data in steps:
            a.feed(index, total, data)


def test_a_wrong_hash_names_both():
    with pytest.raises(UploadError, match="declared 00, uploaded " +
                       blake3.blake3(b"abc").hexdigest()):
        feed_all(b"abc", 2, digest="00")


def test_total_chunks_must_be_positive():
    with pytest.raises(UploadError, match="total_chunks must be >= 1"):
        Assembly("00", 0, 5, "t")


def test_frames_match_pie_clients_maps():
    # What pie-client packs (client.py) decodes to our Structs ...
    fr = f.decode(msgpack.packb({"type": "launch_process", "corr_id": 3, "inferlet": "a@1",
                                 "input": "{}", "capture_outputs": False},
                                use_bin_type=True))
    assert fr == f.LaunchProcess(corr_id=3, inferlet="a@1", input="{}",
                                 capture_outputs=False)
    # ... and what we send unpacks to the maps it reads.
    assert msgpack.unpackb(f.encode(f.Response(3, True, "x")), raw=False) == {
        "type": "response", "corr_id": 3, "ok": True, "result": "x"}
    assert msgpack.unpackb(f.encode(f.FileChunk("p", "h", 0, 1, b"\0", None)), raw=False) == {
        "type": "file", "process_id": "p", "file_hash": "h", "chunk_index": 0,
        "total_chunks": 1, "chunk_data": b"\0", "name": None}
    # JSON text frames are accepted too, as by PIE.
    assert f.decode('{"type": "ping", "corr_id": 5}') == f.Ping(corr_id=5)


@pytest.mark.parametrize("raw, corr_id, problem", [
    (msgpack.packb([1, 2]), None, "must be a map"),
    (b"\xc1", None, "undecodable"),
    (msgpack.packb({"type": "ping"}), None, "invalid ping frame"),
    (msgpack.packb({"type": "ping", "corr_id": "7"}), None, "invalid ping frame"),
    (msgpack.packb({"type": "nope", "corr_id": 7}), 7, "unknown frame type 'nope'"),
])
def test_bad_frames_say_why_and_keep_their_corr_id(raw, corr_id, problem):
    with pytest.raises(f.BadFrame, match=problem) as info:
        f.decode(raw)
    assert info.value.corr_id == corr_id
