"""Bearer-token auth: a pure ASGI middleware, and the rule that binding beyond loopback
needs a token.

The token is compared with ``hmac.compare_digest`` (constant time) and never logged: the
middleware keeps only its bytes, and a refusal says nothing about what was sent.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True
    if host in LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 (a dual-stack socket)
    return (mapped or addr).is_loopback


def check_binding(host: str | None, token: str | None, insecure: bool) -> None:
    """Refuse to serve beyond loopback without a token, unless ``insecure``."""
    if token is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host!r} without a token: pass token= (or "
            "CORRAL_TOKEN), or insecure=True to serve anyone who can reach the port")


TOKEN_ENV = "CORRAL_TOKEN"


def drop_token_from_env(token: str) -> None:
    """Remove ``CORRAL_TOKEN`` from this process's environment when it holds ``token``:
    worker processes inherit the environment, and the model code has no business with
    the server's credential. (Workers started before this keep what they had.)"""
    import os

    if os.environ.get(TOKEN_ENV) == token:
        del os.environ[TOKEN_ENV]
def token_matches(given: bytes, token: bytes) -> bool:
    """Whether ``given`` is ``token``, in constant time (for every check of a token)."""
    return hmac.compare_digest(given, token)


class BearerAuth:
    """Answer 401 to any request without ``Authorization: Bearer <token>``, except on the
    ``public`` paths."""

    def __init__(self, app: Any, token: str, public: tuple[str, ...] = ("/health-check",)):
        self.app = app
        self._token = token.encode()
        self.public = frozenset(public)

    def __repr__(self) -> str:  # never show the token
        return f"<BearerAuth public={sorted(self.public)}>"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = b'{"detail":"missing or wrong bearer token"}'
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: dict) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        ok = token_matches(credential.strip(), self._token)
        return scheme.lower() == b"bearer" and ok
