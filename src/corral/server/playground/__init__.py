"""The browser playground: a page at ``GET /`` (for browsers) and ``GET /playground``.

The page (index.html, app.js, app.css beside this file; plain JS, no dependencies) builds
a form from ``/openapi.json`` and runs predictions over the prediction API with
``Accept: text/event-stream``, as any client would: it has no route of its own beyond
its three static files. Those are read once, served from memory with an ETag
(``Cache-Control: no-cache``: revalidated, answered 304 while unchanged), and with a
strict Content-Security-Policy (scripts and styles from this origin only, no inline
code, requests to this origin only, no framing) and ``X-Content-Type-Options: nosniff``.

The files carry no model data, so they are public even when the server has a token
(``PATHS``): the page asks for the token and sends it on its API calls.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: What the page may do: its own scripts, styles and requests; images and media from
#: outputs (data: and blob: URLs); nothing inline, no plugins, no framing, no form posts.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
       "img-src 'self' data: blob:; media-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_FILES = {"index.html": "text/html; charset=utf-8",
          "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}

#: The playground's paths, none of which needs the token ("/" too, whose JSON answer for
#: API clients is a fixed pointer to /openapi.json).
PATHS = ("/", "/playground", "/playground/app.js", "/playground/app.css")


class Asset(NamedTuple):
    body: bytes
    media_type: str
    etag: str


def _load() -> dict[str, Asset]:
    folder = resources.files(__package__)
    assets = {}
    for name, media_type in _FILES.items():
        body = folder.joinpath(name).read_bytes()
        assets[name] = Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return assets


def wants_page(request: Request) -> bool:
    """A browser navigating to ``/`` (it asks for HTML first); API clients get JSON."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept.split(",", 1)[0]


class Playground:
    """The page and its assets, read once from the package."""

    def __init__(self) -> None:
        self.assets = _load()

    def respond(self, request: Request, name: str) -> Response:
        asset = self.assets[name]
        headers = {
            "ETag": asset.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Vary": "Accept",  # "/" answers JSON or this page by the Accept header
        }
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    async def page(self, request: Request) -> Response:
        return self.respond(request, "index.html")

    def routes(self) -> list[Route]:
        async def script(request: Request) -> Response:
            return self.respond(request, "app.js")

        async def style(request: Request) -> Response:
            return self.respond(request, "app.css")

        return [Route("/playground", self.page, methods=["GET"]),
                Route("/playground/app.js", script, methods=["GET"]),
                Route("/playground/app.css", style, methods=["GET"])]


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
