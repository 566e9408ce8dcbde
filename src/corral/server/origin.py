"""Who may drive the server from a browser, and where it may be reached without a token.

A server on 127.0.0.1 without a token is not private: any web page the operator visits can
send it requests (a form POST, ``fetch()`` in ``no-cors`` mode), and a page on a domain
that re-resolves to 127.0.0.1 (DNS rebinding) can even read the answers. The rules here
close that, for HTTP and WebSocket alike (``corral serve`` and ``corral host`` apply the
same ``OriginPolicy``):

1. **Bound address.** Without a token (and without ``insecure``), a request that arrived on
   an address beyond loopback is refused (503). The address is the one the connection
   really came in on (ASGI ``scope["server"]``), so an app built for 127.0.0.1 and then
   run by another ASGI server on 0.0.0.0 refuses too.
2. **Host.** The ``Host`` header must name this server: the bound address, the loopback
   names (``localhost``, ``127.0.0.1``, ``::1``) when bound to loopback, or a name in
   ``allowed_hosts`` (``"*"``: any). A server bound to every address (0.0.0.0) takes any
   Host unless ``allowed_hosts`` is given (it needs a token there, which a rebinding page
   does not have). A foreign Host is 403: this is what defeats DNS rebinding.
3. **Origin.** A request with an ``Origin`` header (browsers send one on every cross-origin
   request and every POST) must come from the server's own origin (``scheme://Host``) or
   one in ``allowed_origins`` (``"*"``: any); else 403. ``Origin: null`` is foreign.
   Requests without one (curl, Python clients) pass.
4. **Content-Type.** A state-changing request (POST, PUT, PATCH, DELETE) carries JSON
   (``application/json``, ``*+json``), ``multipart/form-data`` or no body type at all;
   anything else (a form's urlencoded or text/plain body) is 415.

``check(...)`` is the pure rule (no I/O); ``OriginGuard`` is the ASGI middleware that
applies it to every request and WebSocket handshake.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable, NamedTuple

from .auth import LOOPBACK_NAMES, is_loopback

log = logging.getLogger("corral.server")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = frozenset({*LOOPBACK_NAMES, "127.0.0.1", "::1"})
_WILDCARDS = ("0.0.0.0", "::", "")
_BODY_TYPES = frozenset({"application/json", "multipart/form-data"})


class Refusal(NamedTuple):
    """Why a request is refused: its HTTP status and a message for the client."""

    status: int
    detail: str


def _hostname(host: str) -> str:
    """``"Example.COM.:5000"`` -> ``"example.com"``; ``"[::1]:80"`` -> ``"::1"``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_wildcard(address: str) -> bool:
    try:
        return address in _WILDCARDS or ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


class OriginPolicy:
    """The rules for one server. ``token``: whether it has a bearer token; ``insecure``:
    the operator allowed serving beyond loopback without one; ``bind_host``: the ``host=``
    it was built for (a name such as ``localhost`` is then an accepted Host too);
    ``allowed_hosts`` and ``allowed_origins``: more names and origins to accept (``"*"``
    accepts any)."""

    def __init__(self, *, token: bool = False, insecure: bool = False,
                 bind_host: str | None = None, allowed_hosts: Iterable[str] | None = None,
                 allowed_origins: Iterable[str] = ()):
        self.token = token
        self.insecure = insecure
        self.bind_host = bind_host
        self.allowed_hosts = None if allowed_hosts is None else \
            frozenset(_hostname(h) if h != "*" else "*" for h in allowed_hosts)
        self.allowed_origins = frozenset(o.strip().lower().rstrip("/")
                                         for o in allowed_origins)
        self._bound: dict[str, Refusal | None] = {}  # by server address
        self._hosts: dict[Any, frozenset[str] | None] = {}  # by server address
        self._names: dict[str, str] = {}  # Host header -> its name

    def hosts_for(self, server: tuple[str, Any] | None) -> frozenset[str] | None:
        """The Host names accepted on a connection to ``server`` (None: any)."""
        key = tuple(server) if server else None
        if key not in self._hosts:
            self._hosts[key] = self._hosts_for(server)
        return self._hosts[key]

    def _hosts_for(self, server: tuple[str, Any] | None) -> frozenset[str] | None:
        if self.allowed_hosts is not None and "*" in self.allowed_hosts:
            return None
        names: set[str] = set(self.allowed_hosts or ())
        address = server[0] if server else None
        bound = [a for a in (address, self.bind_host) if a is not None]
        if self.allowed_hosts is None and (not bound or any(_is_wildcard(a) for a in bound)):
            return None  # every address (or unknown): a token guards it, see the docstring
        for a in bound:
            if _is_wildcard(a):
                continue
            names.add(_hostname(a))
            if is_loopback(a):
                names |= LOOPBACK_HOSTS
        return frozenset(names)

    def _binding_refusal(self, address: str) -> Refusal | None:
        if self.token or self.insecure or is_loopback(address) or "/" in address:
            return None
        log.error("refusing requests: this server is reachable on %s, beyond loopback, "
                  "without a token", address)
        return Refusal(503, f"refusing to serve: the server is reachable on {address}, "
                            "beyond loopback, without a token (give it a token, or "
                            "insecure=True / --insecure)")

    def check(self, method: str, host: str | None, origin: str | None,
              content_type: str | None, scheme: str = "http",
              server: tuple[str, Any] | None = None) -> Refusal | None:
        """The refusal for a request (None: it may go on). ``host``, ``origin`` and
        ``content_type`` are its headers (None when absent); ``server`` the (address, port)
        the connection came in on; ``scheme`` http(s) or ws(s)."""
        if server:
            address = str(server[0])
            try:  # (per address, worked out once: this runs on every request)
                refusal = self._bound[address]
            except KeyError:
                refusal = self._bound[address] = self._binding_refusal(address)
            if refusal is not None:
                return refusal
        if host is not None:
            accepted = self.hosts_for(server)
            if accepted is not None:
                name = self._names.get(host)
                if name is None:
                    name = _hostname(host)
                    if len(self._names) < 1024:
                        self._names[host] = name
                if name not in accepted:
                    return Refusal(403, f"the Host header {host!r} does not name this "
                                        "server (allow it with --allowed-host)")
        if origin is not None:
            given = origin.strip().lower().rstrip("/")
            web = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            own = f"{web}://{host.strip().lower()}" if host is not None else None
            if given != own and given not in self.allowed_origins \
                    and "*" not in self.allowed_origins:
                return Refusal(403, f"requests from the origin {origin!r} are not allowed "
                                    "(allow it with --allowed-origin)")
        if content_type and method in UNSAFE_METHODS:
            media = content_type.split(";", 1)[0].strip().lower()
            if media and media not in _BODY_TYPES and not media.endswith("+json"):
                return Refusal(415, f"unsupported Content-Type {media!r}: send "
                                    "application/json or multipart/form-data")
        return None

    def check_scope(self, scope: dict) -> Refusal | None:
        """``check`` on an ASGI http or websocket scope."""
        host = origin = ctype = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value.decode("latin-1")
        if scope["type"] == "http":
            return self.check(scope["method"], host, origin, ctype, scope.get("scheme", "http"),
                              scope.get("server"))
        return self.check("GET", host, origin, None, scope.get("scheme", "ws"),
                          scope.get("server"))


class OriginGuard:
    """ASGI middleware: refuse what ``policy`` refuses (HTTP: a JSON answer with its
    status; WebSocket: the handshake is closed, which servers answer 403)."""

    def __init__(self, app: Any, policy: OriginPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.policy.check_scope(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        import json

        body = json.dumps({"detail": refusal.detail}).encode()
        await send({"type": "http.response.start", "status": refusal.status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
