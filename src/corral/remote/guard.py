"""Who may open a WebSocket: the token, and the Host and Origin headers.

Kept as small functions of the ASGI scope so that ``corral host`` and any protocol mounted
on it (PIE's, at /v1/ws) refuse the same requests the same way. (The HTTP server's own
Host/Origin check, when it lands in server/, can replace ``host_origin_problem``.)

- **Token**: ``Authorization: Bearer <token>`` only, compared in constant time
  (``hmac.compare_digest``); a token in the URL's query is never read (URLs get logged).
- **Host** (DNS rebinding): a server bound to loopback answers only requests whose Host is
  a loopback name or address (or one of ``allowed_hosts``).
- **Origin** (cross-site WebSocket hijacking: browsers send cookies-free but
  attacker-chosen pages can still connect): a request with an Origin header is accepted
  only when the Origin's host is the request's Host or one of ``allowed_origins``. Clients
  that are not browsers send no Origin.
"""

from __future__ import annotations

import hmac
from typing import Iterable
from urllib.parse import urlsplit

from ..server.auth import is_loopback


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def token_ok(scope: dict, token: bytes | None) -> bool:
    """True when no token is required, or the request carries it as a bearer token."""
    if token is None:
        return True
    given = header(scope, b"authorization") or b""
    scheme, _, credential = given.partition(b" ")
    ok = hmac.compare_digest(credential.strip(), token)
    return scheme.lower() == b"bearer" and ok


def _hostname(hostport: str) -> str:
    hostport = hostport.strip().lower()
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def host_origin_problem(scope: dict, bound: str | None, allowed_hosts: Iterable[str] = (),
                        allowed_origins: Iterable[str] = ()) -> str | None:
    """Why the request's Host or Origin is refused, or None."""
    hosts = [v for k, v in scope.get("headers", ()) if k == b"host"]
    if len(hosts) > 1:
        return "the request has more than one Host header"
    raw_host = (hosts[0] if hosts else b"").decode("latin-1")
    host = _hostname(raw_host)
    allowed = {h.lower() for h in allowed_hosts}
    if is_loopback(bound) and host not in allowed and not is_loopback(host or None):
        return (f"Host {raw_host!r} is not served here (a loopback server answers loopback "
                "names only; --allow-host adds one)")
    origin = header(scope, b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1")
    parts = urlsplit(text)
    origin_host = (parts.hostname or "").lower()
    if not origin_host:
        return f"Origin {text!r} is refused"
    origins = {o.lower().rstrip("/") for o in allowed_origins}
    if text.lower().rstrip("/") in origins or origin_host in origins:
        return None
    if origin_host == host:
        return None
    return (f"Origin {text!r} is not allowed to open a session here (--allow-origin "
            "adds one)")
