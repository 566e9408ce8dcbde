"""File inputs given as http(s) URLs, fetched by the server as Cog does: never an SSRF proxy.

A client may put ``https://example.com/cat.png`` where a ``File``/``Path`` input goes; the
server downloads it into the prediction's workspace before the prediction is queued, and
the model gets a ``corral.File`` as for an upload. The URL is the client's, so the fetch
keeps to outbound.py's rule: every address the host resolves to must be public (or in the
operator's ``--fetch-allow`` networks), the connection goes to the very address checked,
and each redirect (at most ``MAX_REDIRECTS``) is checked and pinned again. The body is
capped (``max_bytes``; a ``Content-Length`` over it is refused before anything is read)
and the whole fetch has a deadline. Every failure is an ``OutboundRefused`` whose message
says what went wrong; the app answers it 422 naming the input.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import re
import urllib.parse
from typing import Any

from .outbound import OutboundPolicy, OutboundRefused, parse_networks

ALLOW_ENV = "CORRAL_FETCH_ALLOW"
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 60.0
_REDIRECTS = (301, 302, 303, 307, 308)
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")


def networks_from_env() -> tuple[Any, ...]:
    """The networks in ``CORRAL_FETCH_ALLOW`` (space- or comma-separated CIDRs)."""
    return parse_networks([os.environ.get(ALLOW_ENV, "")])


class Fetched:
    """What a fetch wrote: its media type and the file name the URL suggests."""

    __slots__ = ("content_type", "name", "size")

    def __init__(self, content_type: str, name: str, size: int):
        self.content_type, self.name, self.size = content_type, name, size


class InputFetcher:
    """Downloads file inputs for one app (one HTTP connection pool, closed by ``aclose``)."""

    def __init__(self, *, allow: tuple[Any, ...] = (), max_bytes: int = 100 * 1024 * 1024,
                 timeout: float = DEFAULT_TIMEOUT):
        self.policy = OutboundPolicy(allow, what="the file input",
                                     hint=f"--fetch-allow or {ALLOW_ENV}")
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            # No proxies from the environment (the checked address must be the one
            # connected to), no redirects followed by httpx (each hop is checked here).
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                             timeout=httpx.Timeout(self.timeout))
        return self._client

    def suggested_name(self, url: str) -> str:
        """The last segment of the URL's path (percent-decoded), or "" when it has none."""
        path = urllib.parse.urlsplit(url).path
        return posixpath.basename(urllib.parse.unquote(path))

    async def fetch(self, url: str, path: str) -> Fetched:
        """Download ``url`` into ``path``; OutboundRefused saying why it could not."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url, path)
        except TimeoutError:
            raise OutboundRefused(
                f"fetching {_shown(url)} took longer than {self.timeout:g}s") from None

    async def _fetch(self, url: str, path: str) -> Fetched:
        import httpx

        first = url
        for _ in range(MAX_REDIRECTS + 1):
            target, headers, extensions = await self.policy.pin(url)
            try:
                async with self._http().stream("GET", target, headers=headers,
                                               extensions=extensions) as resp:
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        url = urllib.parse.urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise OutboundRefused(f"fetching {_shown(url)} answered HTTP "
                                              f"{resp.status_code}")
                    size = await self._save(resp, url, path)
                    mime = resp.headers.get("content-type", "").split(";")[0].strip()
                    if not _MEDIA_TYPE.fullmatch(mime):
                        mime = "application/octet-stream"
                    return Fetched(mime, self.suggested_name(url), size)
            except httpx.HTTPError as exc:
                raise OutboundRefused(f"fetching {_shown(url)} failed: "
                                      f"{type(exc).__name__}: {exc}") from None
        raise OutboundRefused(f"fetching {_shown(first)}: more than {MAX_REDIRECTS} redirects")

    async def _save(self, resp: Any, url: str, path: str) -> int:
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise OutboundRefused(f"{_shown(url)} is {int(declared):,} bytes, over the "
                                  f"server's limit of {self.max_bytes:,} for a fetched input")
        size = 0
        with open(path, "wb") as out:
            async for chunk in resp.aiter_bytes():  # decoded: the cap counts what is written
                size += len(chunk)
                if size > self.max_bytes:
                    raise OutboundRefused(f"{_shown(url)} is over the server's limit of "
                                          f"{self.max_bytes:,} bytes for a fetched input")
                out.write(chunk)  # to the page cache: microseconds, not worth a thread
        return size

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _shown(url: str) -> str:
    """The URL for a message: without its query (which may hold a signed token), capped."""
    parts = urllib.parse.urlsplit(url)
    text = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))
    return repr(text if len(text) <= 200 else text[:200] + "...")
