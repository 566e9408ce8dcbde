"""Webhooks are not an SSRF proxy (issue 12, item 3): URLs resolving to loopback,
link-local, private, multicast or unspecified addresses are 422 unless the operator allows
their network; userinfo is refused; redirects are not followed."""

import ipaddress
import os
import threading

import pytest

from conftest import wait_until

from .conftest import LOCAL_HOOKS, run_server, serving, worker
from .test_streaming_and_ops import Receiver

REFUSED = ["http://127.0.0.1:9/hook", "http://2130706433/hook", "http://0x7f000001/",
           "http://[::ffff:127.0.0.1]:9/hook", "http://localhost./hook",
           "http://localhost:9/", "http://sub.localhost/", "http://[::1]/",
           "http://10.0.0.1/", "http://192.168.1.1/", "http://172.16.0.1/",
           "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
           "http://224.0.0.1/", "http://0.0.0.0/", "http://[::]/", "http://100.64.0.1/",
           "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://[fd00::1]/"]


def test_webhooks_to_internal_addresses_are_422_before_anything_runs(tmp_path):
    with serving(worker("Typed")) as srv, srv.client() as c:
        for url in REFUSED:
            r = c.post("/predictions", json={"input": {"text": "a"}, "webhook": url},
                       headers={"Prefer": "respond-async"})
            assert r.status_code == 422, (url, r.text)
            problem = r.json()["detail"][0]
            assert problem["loc"] == ["body", "webhook"]
            assert "not a public address" in problem["msg"], (url, problem)
        for url, why in [("http://user:pw@example.com/", "user name or password"),
                         ("http://@example.com/", "user name or password"),
                         ("http:///nohost", "no host"),
                         ("http://nonexistent.invalid/", "cannot be resolved")]:
            r = c.post("/predictions", json={"input": {"text": "a"}, "webhook": url})
            assert r.status_code == 422 and why in r.json()["detail"][0]["msg"], (url, r.text)
        assert srv.app.state.predictions.records == {}  # none of them ran


def test_the_operator_allows_networks_and_the_env_var_does_too(monkeypatch):
    receiver = Receiver()
    with run_server(receiver.app) as hooks, serving(worker("Typed"), **LOCAL_HOOKS) as srv, \
            srv.client() as c:
        r = c.post("/predictions", json={"input": {"text": "a"}, "webhook": hooks.url + "/hook",
                                         "webhook_events_filter": ["completed"]})
        assert r.status_code == 200
        receiver.wait_for(lambda b: len(b) == 1)
        # an allowed network is that network only
        r = c.post("/predictions", json={"input": {"text": "a"}, "webhook": "http://10.0.0.1/"})
        assert r.status_code == 422
    monkeypatch.setenv("CORRAL_WEBHOOK_ALLOW", "10.0.0.0/8, 127.0.0.1/32")
    receiver = Receiver()
    with run_server(receiver.app) as hooks, serving(worker("Typed")) as srv, \
            srv.client() as c:
        r = c.post("/predictions", json={"input": {"text": "b"}, "webhook": hooks.url + "/hook",
                                         "webhook_events_filter": ["completed"]})
        assert r.status_code == 200
        receiver.wait_for(lambda b: len(b) == 1 and b[0]["output"] == "b")


def test_redirects_are_not_followed():
    """A receiver that answers 307 to another URL: the server never goes there."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, RedirectResponse
    from starlette.routing import Route

    hits = {"hook": 0, "inner": 0}
    done = threading.Event()

    async def hook(request):
        hits["hook"] += 1
        body = await request.json()
        if body["status"] == "succeeded":
            done.set()
        return RedirectResponse("/inner", status_code=307)

    async def inner(request):
        hits["inner"] += 1
        return JSONResponse({})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]),
                            Route("/inner", inner, methods=["POST"])])
    app.state.set_shutdown = lambda hook: None
    with run_server(app) as hooks, serving(worker("Typed"), **LOCAL_HOOKS) as srv, \
            srv.client() as c:
        c.post("/predictions", json={"input": {"text": "a"}, "webhook": hooks.url + "/hook",
                                     "webhook_events_filter": ["completed"]})
        assert done.wait(30)
        wait_until(lambda: srv.app.state.predictions.records, 30, "the record")
    assert hits == {"hook": 1, "inner": 0}


@pytest.mark.parametrize("text, public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False),
    ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True), ("ff02::1", False),
    ("192.0.2.1", False), ("255.255.255.255", False), ("198.18.0.1", False)])
def test_is_public(text, public):
    from corral.server.outbound import is_public

    assert is_public(ipaddress.ip_address(text)) is public


def test_bad_networks_are_named():
    from corral.server.outbound import parse_networks

    assert [str(n) for n in parse_networks(["127.0.0.0/8 10.0.0.1", "::1"])] == \
        ["127.0.0.0/8", "10.0.0.1/32", "::1/128"]
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks(["127.0.0.0/8,nope"])
    assert os.environ.get("CORRAL_WEBHOOK_ALLOW") is None
