"""Which URLs the server may connect to (webhooks it POSTs to, file inputs it fetches):
not an SSRF proxy.

A client names the URL, and the server connects to it from where it sits; left open, that
lets any client reach the server's loopback services, the cloud metadata endpoint
(169.254.169.254) or the private network. So such a URL must be http(s),
without userinfo, and its host must resolve (after DNS, every address it resolves to) to
public addresses only: loopback, link-local, private, shared (CGNAT), multicast,
unspecified and reserved addresses are refused, also when spelled ``2130706433``,
``[::ffff:127.0.0.1]`` (an IPv4-mapped IPv6 address) or ``localhost.``. The operator can
allow networks (``allow``: CIDRs, e.g. ``127.0.0.0/8`` for a receiver on this machine).

Each use has its own policy (``what`` names it in every refusal, ``hint`` says how the
operator allows networks): webhooks (``--webhook-allow``) and fetched inputs
(``--fetch-allow``, fetch.py). A webhook URL is checked when the prediction is created (a
refused one is 422), and checked again before every POST, whose connection then goes to the
very address that was checked (``pin``): a name that re-resolves to a private address in
between (DNS rebinding) gains nothing. Webhook redirects are never followed; a fetch checks
and pins every hop of a redirect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import urllib.parse
from typing import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "CORRAL_WEBHOOK_ALLOW"
RESOLVE_TIMEOUT = 5.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(ValueError):
    """A URL the server will not connect to; the message says why."""


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; ValueError naming a malformed one."""
    out = []
    for spec in specs:
        for item in str(spec).replace(",", " ").split():
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not a network or address: {item!r} (use CIDR, e.g. "
                                 "127.0.0.0/8)") from None
    return tuple(out)


def networks_from_env() -> tuple[Network, ...]:
    """The networks in ``CORRAL_WEBHOOK_ALLOW`` (space- or comma-separated CIDRs)."""
    return parse_networks([os.environ.get(ALLOW_ENV, "")])


def _unwrap(addr: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 one (else itself)."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def is_public(addr: Address) -> bool:
    """Whether ``addr`` is a public unicast address (what a client's URL may reach)."""
    addr = _unwrap(addr)
    return addr.is_global and not addr.is_multicast


class OutboundPolicy:
    """The rule for one use in one server: public addresses, plus the ``allow``ed
    networks. ``what`` names the URL in refusals ("the webhook"), ``hint`` how to allow
    networks."""

    def __init__(self, allow: Iterable[Network] = (), *, what: str = "the webhook",
                 hint: str = f"--webhook-allow or {ALLOW_ENV}"):
        self.allow = tuple(allow)
        self.what = what
        self.hint = hint

    def permitted(self, addr: Address) -> bool:
        return is_public(addr) or any(addr in net or _unwrap(addr) in net
                                      for net in self.allow)

    def parse(self, url: str) -> urllib.parse.SplitResult:
        """The URL's parts; OutboundRefused when its form alone is unacceptable."""
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise OutboundRefused(f"{self.what} is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise OutboundRefused(f"{self.what} must be an http(s) URL")
        if "@" in parts.netloc:
            raise OutboundRefused(f"{self.what} URL must not hold a user name or password")
        if not parts.hostname:
            raise OutboundRefused(f"{self.what} URL has no host")
        return parts

    async def resolve(self, url: str) -> tuple[urllib.parse.SplitResult, list[Address]]:
        """Check ``url`` and resolve its host: every address it resolves to must be
        permitted. Raises OutboundRefused naming the host and the address refused."""
        parts = self.parse(url)
        host = parts.hostname or ""
        name = host.rstrip(".")
        try:
            addrs = [ipaddress.ip_address(name)]
        except ValueError:
            if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: loopback
                addrs = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
            else:
                addrs = await _lookup(host, parts.port or (443 if parts.scheme == "https"
                                                           else 80), self.what)
        for addr in addrs:
            if not self.permitted(addr):
                raise OutboundRefused(
                    f"{self.what}'s host {host!r} resolves to {addr}, which is not a "
                    "public address (loopback, private, link-local, multicast and "
                    "unspecified addresses are refused; the operator can allow networks "
                    f"with {self.hint})")
        return parts, addrs

    async def pin(self, url: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """Check ``url`` now and give what to POST to: the URL with its host replaced by
        the checked address, the Host header, and httpx's request extensions (TLS is
        still verified for the name, by SNI)."""
        parts, addrs = await self.resolve(url)
        addr = addrs[0]
        host = f"[{addr}]" if addr.version == 6 else str(addr)
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        pinned = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        headers = {"Host": parts.netloc}
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        return pinned, headers, extensions


async def _lookup(host: str, port: int, what: str) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, asyncio.TimeoutError, UnicodeError) as exc:
        raise OutboundRefused(f"{what}'s host {host!r} cannot be resolved "
                              f"({type(exc).__name__})") from None
    out = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]  # (an IPv6 scope id)
        out.append(ipaddress.ip_address(text))
    if not out:
        raise OutboundRefused(f"{what}'s host {host!r} resolves to no address")
    return out
