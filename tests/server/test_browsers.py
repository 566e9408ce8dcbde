"""Browsers cannot drive a token-less loopback server (issue 12, item 4), and an app run by
another ASGI server beyond loopback refuses without a token (item 8): Host, Origin and
Content-Type rules (origin.py), /shutdown off by default, /files links from the bound
address, the real bound address checked."""

import socket

import psutil
import pytest

from .conftest import run_server, serving, worker

EVIL = "http://evil.example"


def test_a_foreign_origin_is_403_and_the_same_origin_passes_json_and_multipart():
    with serving(worker("Typed")) as srv, srv.client() as c:
        for method, path in [("POST", "/predictions"), ("PUT", "/predictions/x"),
                             ("GET", "/predictions/x"), ("POST", "/predictions/x/cancel"),
                             ("GET", "/health-check"), ("POST", "/shutdown")]:
            for origin in (EVIL, "null", srv.url.replace("127.0.0.1", "localhost")):
                r = c.request(method, path, json={"input": {"text": "a"}},
                              headers={"Origin": origin})
                assert r.status_code == 403, (method, path, origin)
                assert "origin" in r.json()["detail"]
        # What the playground page sends from this server's own origin
        own = {"Origin": srv.url}
        r = c.post("/predictions", json={"input": {"text": "ab", "n": 2}}, headers=own)
        assert r.status_code == 200 and r.json()["output"] == "abab"
        r = c.post("/predictions", data={"text": "x", "n": "3"}, files={"f": ("a", b"1")},
                   headers=own)
        assert r.status_code in (200, 422)  # (f is no input of Typed: checked, not refused)
        r = c.post("/predictions", data={"text": "x", "n": "3"},
                   headers={**own, "Content-Type": "multipart/form-data; boundary=B"},
                   content=b'--B\r\nContent-Disposition: form-data; name="text"\r\n\r\nx\r\n'
                           b"--B--\r\n")
        assert r.status_code == 200 and r.json()["output"] == "x"
        assert c.get("/health-check", headers=own).status_code == 200


def test_a_rebinding_host_is_403_and_loopback_names_pass():
    with serving(worker("Typed")) as srv, srv.client() as c:
        port = srv.port
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}",
                     f"10.0.0.1:{port}"):
            r = c.post("/predictions", json={"input": {"text": "a"}}, headers={"Host": host})
            assert r.status_code == 403, host
            assert "Host header" in r.json()["detail"]
            # reading answers is refused too (what rebinding is after)
            assert c.get("/predictions/x", headers={"Host": host}).status_code == 403
        for host in (f"localhost:{port}", f"LOCALHOST.:{port}", f"127.0.0.1:{port}",
                     f"[::1]:{port}"):
            r = c.post("/predictions", json={"input": {"text": "a"}},
                       headers={"Host": host, "Origin": f"http://{host}"})
            assert r.status_code == 200, (host, r.text)


def test_allowed_hosts_and_origins_let_named_ones_in():
    with serving(worker("Typed"), allowed_hosts=("model.internal",),
                 allowed_origins=("https://app.example",)) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"text": "a"}},
                   headers={"Host": "model.internal", "Origin": "https://app.example"})
        assert r.status_code == 200
        assert c.post("/predictions", json={"input": {"text": "a"}},
                      headers={"Origin": EVIL}).status_code == 403
        assert c.get("/health-check", headers={"Host": "other.internal"}).status_code == 403


def test_state_changing_routes_take_only_json_multipart_or_no_body_type():
    token = "t0ken-for-forms"
    with serving(worker("Typed"), token=token) as srv, \
            srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
        for ctype in ("application/x-www-form-urlencoded", "text/plain"):
            for path in ("/shutdown", "/predictions/x/cancel", "/predictions"):
                r = c.post(path, content=b"a=b", headers={"Content-Type": ctype})
                assert r.status_code == 415, (path, ctype)
        assert srv.thread.is_alive()
        assert c.get("/health-check").json()["status"] == "READY"
        assert c.post("/predictions/x/cancel").status_code == 404  # no body type: fine


def test_shutdown_is_off_without_a_token_unless_allowed():
    with serving(worker("Typed")) as srv, srv.client() as c:
        r = c.post("/shutdown")
        assert r.status_code == 403 and "allow-shutdown" in r.json()["detail"]
        assert srv.thread.is_alive()
        assert c.post("/predictions", json={"input": {"text": "a"}}).status_code == 200
    token = "shutdown-token"
    with serving(worker("Typed"), token=token) as srv, \
            srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/shutdown").status_code == 200
        srv.thread.join(30)
        assert not srv.thread.is_alive()


def test_file_links_come_from_the_bound_address_never_the_host_header(tmp_path):
    import corral
    from conftest import fixture_ref

    def make():
        return corral.Worker(fixture_ref("file_targets:Make"))

    inp = {"size": 10, "where": str(tmp_path)}
    with serving(make(), file_outputs="url") as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": inp},
                   headers={"Host": f"localhost:{srv.port}"})
        assert r.status_code == 200, r.text
        link = r.json()["output"]
        assert link.startswith(f"http://127.0.0.1:{srv.port}/files/"), link
        assert c.get(link).content == bytes(range(10))
    with serving(make(), file_outputs="url", public_url="https://models.example/api") as srv, \
            srv.client() as c:
        r = c.post("/predictions", json={"input": inp})
        assert r.json()["output"].startswith("https://models.example/api/files/")


def _outside_address():
    """An IPv4 address of this machine beyond loopback, if it has one."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def test_an_app_built_for_loopback_refuses_when_served_beyond_it_without_a_token():
    from corral.server import create_app
    from corral.server.origin import OriginPolicy

    # The pure rule: what arrived on an outside address is refused without a token.
    policy = OriginPolicy(bind_host="127.0.0.1")
    assert policy.check("GET", "10.1.2.3:80", None, None, "http", ("10.1.2.3", 80)).status \
        == 503
    assert policy.check("GET", "127.0.0.1:80", None, None, "http", ("127.0.0.1", 80)) is None
    assert OriginPolicy(token=True).check("GET", "10.1.2.3", None, None, "http",
                                          ("10.1.2.3", 80)) is None
    outside = _outside_address()
    if outside is None:  # (a machine with loopback only: the rule above is all there is)
        return
    # The app is told 127.0.0.1, and another server runs it on an outside address.
    app = create_app(worker("Typed"), host="127.0.0.1")
    with run_server(app, host=outside) as srv, srv.client() as c:
        r = c.get("/health-check")
        assert r.status_code == 503
        assert "beyond loopback" in r.json()["detail"]
        r = c.post("/predictions", json={"input": {"text": "a"}})
        assert r.status_code == 503 and "without a token" in r.json()["detail"]
    app = create_app(worker("Typed"), host="127.0.0.1", token="tok-outside")
    with run_server(app, host=outside) as srv, \
            srv.client(headers={"Authorization": "Bearer tok-outside"}) as c:
        from conftest import wait_until

        wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 60, "ready")
        r = c.post("/predictions", json={"input": {"text": "a"}})
        assert r.status_code == 200 and r.json()["output"] == "a"


@pytest.mark.parametrize("origin, accepted", [(None, True), ("http://127.0.0.1:5000", True),
                                              (EVIL, False), ("null", False)])
def test_a_websocket_handshake_from_a_foreign_origin_is_closed(origin, accepted):
    """The guard on a WebSocket scope (what `corral host` gets), called as ASGI directly:
    no WebSocket library is a dependency of the server."""
    import asyncio

    from corral.server.origin import OriginGuard, OriginPolicy

    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "websocket.accept"})

    headers = [(b"host", b"127.0.0.1:5000")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    scope = {"type": "websocket", "path": "/v1/ws", "headers": headers, "scheme": "ws",
             "server": ("127.0.0.1", 5000)}
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}

    asyncio.run(OriginGuard(inner, OriginPolicy())(scope, receive, send))
    if accepted:
        assert reached == ["/v1/ws"] and sent == [{"type": "websocket.accept"}]
    else:
        assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
