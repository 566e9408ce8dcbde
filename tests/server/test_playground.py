"""The playground's routes over HTTP: who gets the page, its headers (content types, CSP,
nosniff, ETags), that it needs no token while the API still does, and --no-playground.
What the page does is tested in a browser (test_playground_browser.py)."""

import html.parser
import re

import pytest

from conftest import fixture_ref

from .conftest import corral_serve, run_server

httpx = pytest.importorskip("httpx")

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
ASSETS = {"/playground/app.js": "text/javascript; charset=utf-8",
          "/playground/app.css": "text/css; charset=utf-8"}


@pytest.fixture(scope="module")
def runner():
    """One started worker for every app of this module (an app leaves it running)."""
    import corral

    with corral.Worker(fixture_ref("playground_models:Writer")) as w:
        yield w


def app(runner, **kw):
    from corral.server import create_app

    return create_app(runner, **kw)


def test_browsers_get_the_page_at_root_and_api_clients_get_cogs_json(runner):
    with run_server(app(runner)) as running, running.client() as c:
        for path in ("/", "/playground"):
            r = c.get(path, headers=BROWSER)
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert '<script src="playground/app.js" defer></script>' in r.text
        for accept in (None, "application/json", "*/*", "application/json, text/html"):
            r = c.get("/", headers={"Accept": accept} if accept else {})
            assert r.json() == {"openapi_url": "/openapi.json", "docs_url": None}, accept
            assert r.headers["vary"] == "Accept"
        assert c.get("/", headers=BROWSER).headers["vary"] == "Accept"


def test_the_page_and_its_assets_have_types_a_strict_csp_nosniff_and_etags(runner):
    with run_server(app(runner)) as running, running.client() as c:
        for path, media in {"/playground": "text/html; charset=utf-8", **ASSETS}.items():
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == media, path
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self';" in csp
            assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["cache-control"] == "no-cache"
            etag = r.headers["etag"]
            again = c.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == etag
            assert c.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


class _Scan(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self.scripts = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...>: inline code")
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"<{tag} {name}={value}>: another origin")
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))

    def handle_data(self, data):
        if self.lasttag in ("script", "style") and data.strip():
            self.problems.append(f"inline <{self.lasttag}>")


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere(runner):
    with run_server(app(runner)) as running, running.client() as c:
        scan = _Scan()
        scan.feed(c.get("/playground").text)
        assert scan.problems == [] and scan.scripts == ["playground/app.js"]
        for path in ASSETS:
            text = c.get(path).text
            assert not re.search(r"https?://|@import|url\(", text), path


def test_with_a_token_only_the_page_is_public(runner):
    with run_server(app(runner, token="t0ken")) as running, running.client() as c:
        assert c.get("/", headers=BROWSER).headers["content-type"].startswith("text/html")
        for path in ("/playground", *ASSETS):
            assert c.get(path).status_code == 200, path
        assert c.get("/", headers={"Accept": "application/json"}).json()["openapi_url"] \
            == "/openapi.json"
        assert c.get("/openapi.json").status_code == 401
        assert c.post("/predictions", json={"input": {"prompt": "x"}}).status_code == 401
        ok = c.get("/openapi.json", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200


def test_playground_false_serves_no_page(runner):
    with run_server(app(runner, playground=False, token="t0ken")) as running, \
            running.client() as c:
        assert c.get("/playground").status_code == 401  # unknown, and not public
        auth = {"Authorization": "Bearer t0ken"}
        r = c.get("/", headers={**BROWSER, **auth})
        assert r.json() == {"openapi_url": "/openapi.json", "docs_url": None}
        assert "vary" not in r.headers
        for path in ("/playground", *ASSETS):
            assert c.get(path, headers=auth).status_code == 404, path


def test_corral_serve_no_playground_turns_it_off():
    with corral_serve(fixture_ref("playground_models:Writer"), "--no-playground") as base:
        assert httpx.get(f"{base}/playground", timeout=10).status_code == 404
        assert httpx.get(base + "/", headers=BROWSER, timeout=10).json()["docs_url"] is None
