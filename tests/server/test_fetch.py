"""File inputs given as http(s) URLs: fetched as Cog does, never as an SSRF proxy (fetch.py).

The files come from a real origin server on 127.0.0.1 (uvicorn in a thread); loopback is
not a public address, so the corral server fetches from it only where a test allows
127.0.0.0/8 with ``fetch_allow``, and otherwise refuses before connecting (the origin
counts the requests it gets)."""

import asyncio
import hashlib
import os

import pytest

from .conftest import run_server, serving
from .test_files import target, workspaces

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
LOOPBACK = ("127.0.0.0/8",)


class Origin:
    """The origin's routes, and the requests it has answered."""

    def __init__(self):
        self.hits: list[str] = []

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import RedirectResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def cat(request):
            return Response(PNG, media_type="image/png")

        async def noext(request):
            return Response(b"plain words", media_type="text/plain; charset=utf-8")

        async def hop(request):
            n = int(request.path_params["n"])
            return RedirectResponse(f"/hop/{n - 1}" if n > 1 else "/files/cat.png", 302)

        async def loop(request):
            return RedirectResponse("/loop", 302)

        async def to_private(request):
            return RedirectResponse("http://10.255.255.1/secret", 302)

        async def missing(request):
            return Response(b"no", status_code=404)

        async def declared_big(request):
            return Response(b"x" * 5000, media_type="application/octet-stream")

        async def streamed_big(request):
            async def body():
                for _ in range(10):
                    yield b"y" * 1000
            return StreamingResponse(body(), media_type="application/octet-stream")

        async def hold(request):  # answers only once the client has gone
            await request.body()
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(b"late")

        routes = [Route("/files/cat.png", cat), Route("/noext", noext),
                  Route("/hop/{n}", hop), Route("/loop", loop),
                  Route("/to-private", to_private), Route("/missing", missing),
                  Route("/big", declared_big), Route("/streamed", streamed_big),
                  Route("/hold", hold)]
        app = Starlette(routes=routes)
        app.state.set_shutdown = lambda stop: None
        hits = self.hits

        class Counted:  # the app, counting the requests that reach it
            state = app.state

            async def __call__(self, scope, receive, send):
                if scope["type"] == "http":
                    hits.append(scope["path"])
                await app(scope, receive, send)

        return Counted()


@pytest.fixture
def origin():
    o = Origin()
    with run_server(o.app()) as running:
        o.url = running.url
        yield o


def test_a_url_input_is_fetched_into_a_file_with_its_name_and_type(origin):
    with serving(target("Info"), fetch_allow=LOOPBACK) as srv, srv.client() as c:
        url = origin.url + "/files/cat.png?sig=abc"
        r = c.post("/predictions", json={"input": {"doc": url}})
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert out["is_file"] and out["name"] == "cat.png"
        assert out["content_type"] == "image/png" and out["size"] == len(PNG)
        assert out["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert r.json()["input"]["doc"] == url  # the record shows the URL as sent
        assert not os.path.exists(out["path"]) and workspaces(srv) == []
        # No extension in the URL: the media type gives one.
        r = c.post("/predictions", json={"input": {"doc": origin.url + "/noext"}})
        out = r.json()["output"]
        assert out["name"] == "noext.txt" and out["content_type"] == "text/plain"


def test_redirects_are_followed_a_few_hops_and_each_is_checked(origin):
    with serving(target("Info"), fetch_allow=LOOPBACK) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"doc": origin.url + "/hop/3"}})
        assert r.status_code == 200, r.text
        assert r.json()["output"]["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert origin.hits[-4:] == ["/hop/3", "/hop/2", "/hop/1", "/files/cat.png"]

        r = c.post("/predictions", json={"input": {"doc": origin.url + "/loop"}})
        assert r.status_code == 422 and "more than 5 redirects" in r.json()["detail"][0]["msg"]
        # A redirect to a private address is refused before anything connects there.
        r = c.post("/predictions", json={"input": {"doc": origin.url + "/to-private"}})
        [problem] = r.json()["detail"]
        assert r.status_code == 422 and problem["loc"] == ["body", "input", "doc"]
        assert "10.255.255.1" in problem["msg"] and "not a public address" in problem["msg"]
        assert workspaces(srv) == []


def test_loopback_and_private_urls_are_refused_by_default_without_a_connection(origin):
    with serving(target("Info")) as srv, srv.client() as c:
        for url in (origin.url + "/files/cat.png",
                    origin.url.replace("127.0.0.1", "localhost") + "/files/cat.png",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x",
                    "http://2130706433/x"):
            r = c.post("/predictions", json={"input": {"doc": url}})
            assert r.status_code == 422, (url, r.text)
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["body", "input", "doc"]
            assert "not a public address" in problem["msg"] and "--fetch-allow" in problem["msg"]
        assert origin.hits == []
        assert workspaces(srv) == []


def test_failed_fetches_are_422_saying_why_without_the_query(origin):
    with serving(target("Info"), fetch_allow=LOOPBACK, fetch_max_bytes=4096) as srv, \
            srv.client() as c:
        for path, words in [("/missing?token=s3cret", "answered HTTP 404"),
                            ("/big", "5,000 bytes, over the server's limit of 4,096"),
                            ("/streamed", "over the server's limit of 4,096 bytes"),
                            ("http://127.0.0.1:9/closed", "ConnectError")]:
            url = path if path.startswith("http") else origin.url + path
            r = c.post("/predictions", json={"input": {"doc": url}})
            assert r.status_code == 422, (path, r.text)
            msg = r.json()["detail"][0]["msg"]
            assert words in msg and "s3cret" not in msg, (path, msg)
        assert workspaces(srv) == []


def test_fetching_can_be_turned_off():
    with serving(target("Info"), fetch_inputs=False) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"doc": "https://example.com/x.png"}})
        assert r.status_code == 422 and "not fetched" in r.json()["detail"][0]["msg"]


def test_a_stalled_origin_ends_in_a_typed_error_at_the_deadline(origin, tmp_path):
    from corral.server.fetch import InputFetcher
    from corral.server.outbound import OutboundRefused, parse_networks

    async def go():
        fetcher = InputFetcher(allow=parse_networks(LOOPBACK), timeout=0.3)
        try:
            with pytest.raises(OutboundRefused, match="took longer than 0.3s"):
                await fetcher.fetch(origin.url + "/hold", str(tmp_path / "f"))
        finally:
            await fetcher.aclose()

    asyncio.run(go())
    assert origin.hits == ["/hold"]
