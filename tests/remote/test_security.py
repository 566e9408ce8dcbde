"""The security rules of ``corral host``, one test per rule.

| rule                                                           | test |
|----------------------------------------------------------------|------|
| beyond loopback needs a token, unless --insecure               | test_refuses_to_serve_beyond_loopback_without_a_token |
| a missing or wrong token is refused (401, AuthenticationError) | test_a_missing_or_wrong_token_is_refused |
| the token is compared in constant time                         | test_the_token_is_compared_in_constant_time |
| the token is never logged, also not from a URL query           | test_the_token_is_never_logged_even_from_a_url_query |
| a token in the client's URL is refused before sending          | test_the_client_refuses_a_token_in_the_url |
| per-chunk upload limit                                         | test_a_chunk_over_the_limit_is_refused |
| total upload limit                                             | test_an_upload_over_the_total_limit_is_refused |
| hash mismatch refused                                          | test_a_hash_mismatch_is_refused |
| out-of-order chunk refused                                     | test_an_out_of_order_chunk_is_refused |
| duplicate chunk refused                                        | test_a_duplicate_chunk_is_refused |
| extraction refuses absolute, .., links, devices, FIFOs         | test_bundles.py::test_extraction_refuses_unsafe_members_before_writing_anything, test_an_unsafe_bundle_is_refused_by_the_server |
| frame size cap                                                 | test_a_frame_over_the_limit_closes_the_connection |
| connection cap                                                 | test_connections_over_the_cap_are_refused |
| instances per client cap                                       | test_instances_over_the_cap_are_refused |
| idle clients are closed                                        | test_an_idle_session_is_closed |
| slow clients cost bounded memory                               | test_backpressure.py::test_a_client_that_stops_reading_costs_bounded_memory |
| Host header (DNS rebinding), the HTTP server's OriginPolicy    | test_a_foreign_host_header_is_refused |
| Origin header (cross-site WebSocket), the same policy          | test_a_foreign_origin_is_refused |
| Host/Origin on the HTTP routes too                             | test_http_routes_refuse_a_foreign_host |
| another client's instance answers as an unknown id             | test_lifetimes.py::test_two_clients_cannot_see_each_other |
| pickle never crosses                                           | test_a_pickled_value_is_refused |
| a protocol version mismatch fails fast, naming both            | test_a_version_mismatch_names_both_versions |
| /metrics needs the token, /health does not                     | test_metrics_need_the_token |
"""

import io
import os
import subprocess
import sys
import tarfile

import blake3
import httpx
import msgspec
import pytest

import corral
from conftest import live_descendants, wait_until
from corral.protocol.values import PICKLE
from corral.remote import protocol as p
from corral.remote.errors import (
    AuthenticationError,
    ConnectionLost,
    HandshakeError,
    LimitExceeded,
    UploadError,
)
from remote.conftest import MODEL, ROOT, TOKEN, Host
from remote.raw import Raw


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    h = Host(str(tmp_path_factory.mktemp("strict")), "--max-chunk", "64KiB", "--max-upload",
             "4MiB", "--max-frame", "8MiB", "--max-instances", "1")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    h = Host(str(tmp_path_factory.mktemp("tight")), "--max-connections", "2",
             "--idle-timeout", "1")
    yield h
    h.stop()


def _cli(*args, env_token=None):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    env.pop("CORRAL_TOKEN", None)
    if env_token:
        env["CORRAL_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "corral", "host", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_refuses_to_serve_beyond_loopback_without_a_token(tmp_path):
    r = _cli("--host", "0.0.0.0", "--port", "0", "--store", str(tmp_path))
    assert r.returncode == 2
    assert "without a token" in r.stderr and "--insecure" in r.stderr
    h = Host(str(tmp_path / "insecure"), "--insecure", token=None, host="0.0.0.0")
    try:
        with h.connect(token=None) as s:  # (it answers loopback Host names only)
            s.ping()
    finally:
        h.stop()


def test_a_missing_or_wrong_token_is_refused(strict):
    with pytest.raises(AuthenticationError):
        strict.connect(token=None)
    with pytest.raises(AuthenticationError):
        strict.connect(token="wrong-token")


def test_the_token_is_compared_in_constant_time(monkeypatch):
    from corral.remote import guard

    seen = []
    real = guard.hmac.compare_digest
    monkeypatch.setattr(guard.hmac, "compare_digest", lambda a, b: seen.append(1) or real(a, b))
    scope = {"headers": [(b"authorization", b"Bearer nope")]}
    assert not guard.token_ok(scope, b"secret")
    assert seen == [1]


def test_the_token_is_never_logged_even_from_a_url_query(strict):
    raw = Raw(strict.url + p.PATH + f"?token={TOKEN}", TOKEN)
    raw.send(p.Ping(1))
    assert isinstance(raw.answer(1), p.Answer)
    raw.close()
    with pytest.raises(Exception):
        Raw(strict.url + p.PATH + "?token=other-secret-in-query", None)
    wait_until(lambda: "?[redacted]" in strict.log and strict.log.count("WEBSOCKET") >= 2,
               10, "the access lines")
    assert TOKEN not in strict.log and "other-secret-in-query" not in strict.log


def test_the_client_refuses_a_token_in_the_url(strict):
    with pytest.raises(ValueError, match="token="):
        corral.connect(strict.url + f"/?token={TOKEN}")


def _upload_raw(h, data, digest, chunks):
    raw = Raw(h.url, TOKEN)
    raw.send(p.UploadBegin(1, digest, len(data), len(chunks)))
    ans = raw.answer(1)
    if isinstance(ans, p.Problem):
        raw.close()
        return ans
    for i, c in chunks:
        raw.send(p.UploadChunk(2, 1, i, c))
    ans = raw.answer(2)
    raw.close()
    return ans


def test_a_chunk_over_the_limit_is_refused(strict, tmp_path):
    (tmp_path / "weights.bin").write_bytes(os.urandom(300 * 1024))
    with strict.connect() as s:
        with pytest.raises(UploadError, match="per chunk"):
            s.upload(tmp_path, chunk_size=128 * 1024)  # > --max-chunk 64KiB


def test_an_upload_over_the_total_limit_is_refused(strict, tmp_path):
    with open(tmp_path / "huge.bin", "wb") as f:
        f.write(b"\0" * (5 << 20))
    with strict.connect() as s:
        with pytest.raises(UploadError, match="exceeds the limit"):
            s.upload(tmp_path)


def _bundle():
    """A bundle the server has never seen."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        body = os.urandom(2048)
        info = tarfile.TarInfo("model.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    data = buf.getvalue()
    return data, blake3.blake3(data).hexdigest()


def test_a_hash_mismatch_is_refused(strict):
    data, _ = _bundle()
    ans = _upload_raw(strict, data, "f" * 64, [(0, data)])
    assert isinstance(ans, p.Problem) and "hash mismatch" in ans.error.message
    assert ans.error.cls == "UploadError"


def test_an_out_of_order_chunk_is_refused(strict):
    data, digest = _bundle()
    half = len(data) // 2
    ans = _upload_raw(strict, data, digest, [(1, data[half:]), (0, data[:half])])
    assert isinstance(ans, p.Problem) and "out of order: expected chunk 0" in ans.error.message


def test_a_duplicate_chunk_is_refused(strict):
    data, digest = _bundle()
    half = len(data) // 2
    ans = _upload_raw(strict, data, digest, [(0, data[:half]), (0, data[:half])])
    assert isinstance(ans, p.Problem) and "chunk 0 arrived twice" in ans.error.message


def test_an_unsafe_bundle_is_refused_by_the_server(strict):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("escape")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    data = buf.getvalue()
    ans = _upload_raw(strict, data, blake3.blake3(data).hexdigest(), [(0, data)])
    assert isinstance(ans, p.Problem) and "is a link: refused" in ans.error.message


def test_a_frame_over_the_limit_closes_the_connection(strict):
    import numpy as np

    with strict.connect() as s:
        prog = s.upload(MODEL)
        w = s.launch(prog, target="remote_model.py:Model")
        assert w.call("echo", np.zeros(1 << 20, dtype=np.uint8)).nbytes == 1 << 20
        with pytest.raises(ConnectionLost):
            w.call("echo", np.zeros(9 << 20, dtype=np.uint8))  # > --max-frame 8MiB
    # The instance ends with the connection: its worker and the worker's keeper (which
    # outlives the worker by a reap) are both gone, the server goes on.
    wait_until(lambda: not _processes_under(strict.proc.pid), 30,
               "the session's instance (worker and keeper) to end")
    with strict.connect() as s:
        s.ping()


def _processes_under(pid):
    return live_descendants(pid)


def test_instances_over_the_cap_are_refused(strict):
    with strict.connect() as s:
        prog = s.upload(MODEL)
        w = s.launch(prog, target="remote_model.py:Model")
        with pytest.raises(LimitExceeded, match="--max-instances 1"):
            s.launch(prog, target="remote_model.py:Model")
        w.stop()
        s.launch(prog, target="remote_model.py:Model").stop()  # room again


def test_connections_over_the_cap_are_refused(tight):
    wait_until(lambda: httpx.get(tight.http + "/health").json()["sessions"] == 0, 10,
               "no sessions")
    a, b = tight.connect(), tight.connect()
    try:
        with pytest.raises(HandshakeError, match="503"):
            tight.connect()
    finally:
        a.close()
        b.close()


def test_an_idle_session_is_closed(tight):
    wait_until(lambda: httpx.get(tight.http + "/health").json()["sessions"] == 0, 10,
               "no sessions")
    s = tight.connect()
    wait_until(lambda: s._link._error is not None, 10, "the idle session to be closed")
    with pytest.raises(ConnectionLost):
        s.ping()
    s.close()
    assert "idle for 1 s" in tight.log


def _upgrade_status(h, host_header):
    import base64
    import socket

    port = int(h.url.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"GET {p.PATH} HTTP/1.1\r\n{host_header}Upgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
                     .encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_a_foreign_host_header_is_refused(strict):
    port = strict.url.rsplit(":", 1)[1]
    assert _upgrade_status(strict, f"Host: evil.example:{port}\r\n") == 403  # rebinding
    assert _upgrade_status(strict, f"Host: localhost:{port}\r\nHost: evil.example\r\n") \
        == 400
    assert _upgrade_status(strict, f"Host: 127.0.0.1:{port}\r\n") == 101


def test_a_foreign_origin_is_refused(strict):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        Raw(strict.url, TOKEN, origin="http://evil.example")
    assert info.value.response.status_code == 403
    same = strict.url.replace("ws://", "http://")
    Raw(strict.url, TOKEN, origin=same).close()  # its own origin is fine


def test_a_pickled_value_is_refused(strict):
    import pickle

    with strict.connect() as s:
        w = s.launch(s.upload(MODEL), target="remote_model.py:Model")
        raw = Raw(strict.url, TOKEN, identity=s.identity)  # the same client, by hand
        try:
            payload = msgspec.msgpack.encode(
                [[msgspec.msgpack.Ext(PICKLE, pickle.dumps(print))], {}, None])
            raw.send(p.Call(1, w.id, "echo", msgspec.Raw(payload)))
            failed = raw.recv()
            assert isinstance(failed, p.Failed) and failed.error.cls == "ProtocolError"
            assert "pickle is not enabled" in failed.error.message
        finally:
            raw.close()
        assert w.call("echo", 1) == 1  # the instance and the session go on


def test_a_version_mismatch_names_both_versions(strict):
    raw = Raw(strict.url, TOKEN, protocol=99)
    assert isinstance(raw.welcome, p.Refused)
    msg = raw.welcome.error.message
    assert f"speaks {p.NATIVE_PROTOCOL}" in msg and "speaks 99" in msg
    raw.close()


def test_metrics_need_the_token(strict):
    assert httpx.get(strict.http + "/health").status_code == 200
    assert httpx.get(strict.http + "/metrics").status_code == 401
    r = httpx.get(strict.http + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "corral_busy_slots" in r.text
    assert "corral_host_sessions" in r.text and "corral_host_instances" in r.text


def test_http_routes_refuse_a_foreign_host(strict):
    r = httpx.get(strict.http + "/health", headers={"Host": "evil.example"})
    assert r.status_code == 403


def test_a_session_holding_an_instance_is_not_idle(tight):
    wait_until(lambda: httpx.get(tight.http + "/health").json()["sessions"] == 0, 10,
               "no sessions")
    with tight.connect() as holder:
        w = holder.launch(holder.upload(MODEL), target="remote_model.py:Model")
        idle = tight.connect()  # idles from now on, as does the holder
        wait_until(lambda: idle._link._error is not None, 10, "the bare session to be closed")
        idle.close()
        assert w.call("add", 1, 2) == 3  # the holder idled as long, and is still served
