"""A bare native-protocol client for tests that must break the rules a real client keeps."""

import secrets

import msgspec
from websockets.sync.client import connect

from corral._version import __version__
from corral.protocol.values import make_ext_hook
from corral.remote import protocol as p

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(p.ServerMsg, ext_hook=make_ext_hook(False)).decode


class Raw:
    def __init__(self, url: str, token: str | None, headers: dict | None = None,
                 hello: bool = True, protocol: int = p.NATIVE_PROTOCOL,
                 identity: str | None = None, **kwargs):
        h = {"Authorization": f"Bearer {token}"} if token else {}
        h.update(headers or {})
        self.ws = connect(url if url.endswith(p.PATH) else url + p.PATH, additional_headers=h,
                          compression=None, proxy=None, max_size=None, **kwargs).__enter__()
        self.welcome = None
        if hello:
            self.identity = identity or secrets.token_urlsafe(24)
            self.send(p.Hello(protocol, __version__, self.identity))
            self.welcome = self.recv()

    def send(self, msg, blobs=()):
        self.ws.send(_encode(msg))
        for b in blobs:
            self.ws.send(b)

    def recv(self, timeout: float = 30):
        msg = _decode(self.ws.recv(timeout))
        n = getattr(msg, "blobs", 0)
        return msg if not n else (msg, [self.ws.recv(timeout) for _ in range(n)])

    def answer(self, seq: int, timeout: float = 30):
        """The Answer or Problem for ``seq`` (other messages skipped)."""
        while True:
            msg = self.recv(timeout)
            if isinstance(msg, (p.Answer, p.Problem)) and msg.seq == seq:
                return msg

    def close(self):
        self.ws.close()
