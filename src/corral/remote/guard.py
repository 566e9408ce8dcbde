"""Who may open a WebSocket: the token, and the Host and Origin headers.

Kept as small functions of the ASGI scope so that ``corral host`` and any protocol mounted
on it (PIE's, at /v1/ws) refuse the same requests the same way; Host and Origin follow the
HTTP server's ``OriginPolicy`` (server/origin.py), so both servers apply one set of rules.

- **Token**: ``Authorization: Bearer <token>`` only, compared in constant time
  (``hmac.compare_digest``); a token in the URL's query is never read (URLs get logged).
- **Host** (DNS rebinding): the Host header must name this server (a loopback-bound server:
  the loopback names; ``allowed_hosts`` adds names); two Host headers are refused.
- **Origin** (cross-site WebSocket hijacking): a request with an Origin header must come
  from the server's own origin or one of ``allowed_origins``. Clients that are not
  browsers send no Origin.
"""

from __future__ import annotations

import hmac
from typing import Any, Iterable


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


def upgrade_refusal(scope: dict, policy: Any) -> tuple[int, str] | None:
    """Why the request's Host or Origin is refused (status, text), or None: the HTTP
    server's rules (server/origin.py ``OriginPolicy``), plus one Host header at most."""
    hosts = [v for k, v in scope.get("headers", ()) if k == b"host"]
    if len(hosts) > 1:
        return 400, "the request has more than one Host header"
    refusal = policy.check_scope(scope)
    return None if refusal is None else (refusal.status, refusal.detail)


def host_origin_problem(scope: dict, bound: str | None, allowed_hosts: Iterable[str] = (),
                        allowed_origins: Iterable[str] = ()) -> str | None:
    """``upgrade_refusal``'s text alone, for a server bound to ``bound`` (the first form of
    this check; ``HostState.origin_problem`` is the one to use)."""
    from ..server.origin import OriginPolicy

    policy = OriginPolicy(token=True, bind_host=bound, allowed_hosts=tuple(allowed_hosts) or
                          None, allowed_origins=allowed_origins)
    refusal = upgrade_refusal(scope, policy)
    return None if refusal is None else refusal[1]
