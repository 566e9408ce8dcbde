"""A minimal server for PIE's protocol alone: a Starlette app with the endpoint at /v1/ws.

``python -m corral.remote.pie --root DIR [--host 127.0.0.1] [--port 0] [--port-file F]``
(the token from ``CORRAL_TOKEN``). ``corral host`` mounts the same route in its own app; this
one is for tests, benchmarks and a PIE drop-in without the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from typing import Any

from ...server.auth import check_binding
from .service import PieService

#: uvicorn's own cap on a WebSocket message: above the service's max_frame, so that an
#: oversize frame reaches the service and gets an answer for its corr_id.
WS_MAX_SIZE = 64 * 1024 * 1024

#: What a server mounting PIE's route should give uvicorn. No permessage-deflate: pie-client
#: asks for it, and zlib on every 256 KiB chunk of an incompressible file costs ~10x the
#: transfer (a 50 MB file: seconds instead of a tenth of one). PIE's server offers none.
UVICORN_OPTIONS = {"ws": "websockets-sansio", "ws_max_size": WS_MAX_SIZE,
                   "ws_per_message_deflate": False, "ws_ping_interval": None}


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (``server.run(sockets=[sock])``) with TCP_NODELAY,
    which accepted sockets inherit on Linux: uvloop leaves Nagle on, and a ``response``
    followed at once by a small event then waits 40 ms for the client's delayed ACK."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def make_app(service: PieService) -> Any:
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        async with service.running():
            yield

    return Starlette(routes=[service.route()], lifespan=lifespan)


def serve(service: PieService, host: str = "127.0.0.1", port: int = 8080,
          port_file: str | None = None, log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM; the bound port goes to ``port_file`` once listening."""
    import uvicorn

    check_binding(host, service.token.decode() if service.token else None, insecure=False)
    sock = listening_socket(host, port)
    config = uvicorn.Config(make_app(service), **UVICORN_OPTIONS, log_level=log_level,
                            lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if port_file and server.started:
            tmp = port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(sock.getsockname()[1]))
            os.replace(tmp, port_file)
        await task

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m corral.remote.pie",
                                description="Serve PIE's protocol (pie-client) on corral.")
    p.add_argument("--root", required=True, help="where installed programs are kept")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--warm", type=int, default=4, help="ready processes per environment")
    p.add_argument("--env-root", help="where [dependencies] environments are built")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    service = PieService(args.root, token=os.environ.get("CORRAL_TOKEN") or None,
                         warm=args.warm, env_root=args.env_root)
    serve(service, args.host, args.port, args.port_file, args.log_level)
