"""``corral host``: the session server (uvicorn + Starlette).

Routes: the native protocol's WebSocket at ``/v1/corral`` (native.py), ``GET /health``
(public), ``GET /metrics`` (Prometheus; token-protected like everything but /health), and
whatever ``extra_routes`` a caller mounts (PIE's protocol at /v1/ws) with the same
``HostState``. HTTP routes go through the HTTP server's middleware (server/instrument.py:
metrics and access log; server/auth.py: bearer token); WebSocket upgrades are checked by
guard.py (token, Host, Origin) before they are accepted, and logged on ``corral.access``
when they end. SIGTERM drains: new sessions and calls are refused, calls in flight get
``drain_grace`` seconds, then every instance stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import Any, Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..server.auth import BearerAuth, check_binding
from ..server.drain import Drain, draining_server
from ..server.instrument import Instrument
from ..server.metrics import CONTENT_TYPE, Metrics
from ..server.origin import OriginGuard
from . import guard
from .native import NativeEndpoint
from .pie.standalone import listening_socket
from .protocol import PATH
from .state import HostLimits, HostState
from .store import ProgramStore

log = logging.getLogger("corral.host")


class _AllInstances:
    """The host's instances as one runner, for the HTTP server's RunnerCollector (queue
    depth, busy slots, restarts across every instance)."""

    def __init__(self, state: HostState):
        self.state = state

    @property
    def slots(self) -> int:
        return sum(i.slots * i.workers for i in self.state.instances.all())

    def stats(self) -> Any:
        queued = busy = restarts = 0
        for inst in self.state.instances.all():
            try:
                s = inst.runner.stats()
            except Exception:  # noqa: BLE001
                continue
            workers = getattr(s, "workers", None)
            if workers is None:
                queued, busy = queued + s.queued, busy + s.busy
            else:
                queued += s.queued + sum(w.queued for w in workers)
                busy += sum(w.busy for w in workers)
            restarts += s.restarts
        return _Totals(queued, busy, restarts)


class _Totals:
    workers = None

    def __init__(self, queued: int, busy: int, restarts: int):
        self.queued, self.busy, self.restarts = queued, busy, restarts


class _HostCollector:
    """Sessions and instances of the host, read at scrape time."""

    def __init__(self, state: HostState):
        self.state = state

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("corral_host_sessions", "Open sessions",
                                value=self.state.connections)
        yield GaugeMetricFamily("corral_host_instances", "Live instances",
                                value=len(self.state.instances))


class _Flights:
    """Every session's calls in flight, as server/drain.py's ``service.records``."""

    def __init__(self) -> None:
        self.sessions: set = set()

    @property
    def records(self) -> dict:
        out = {}
        for s in self.sessions:
            for cid, flight in s.flights.items():
                out[(s.id, cid)] = flight
        return out


def create_host_app(state: HostState, *, extra_routes: Sequence[BaseRoute] = (),
                    drain_grace: float = 30.0, stop_grace: float = 5.0,
                    on_shutdown: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app of a session server over ``state``.

    ``extra_routes`` (Starlette routes, e.g. ``WebSocketRoute("/v1/ws", pie_endpoint)``)
    are served beside the native protocol; they reach the programs, instances and rules
    through ``app.state.host`` (the same ``state``) and should refuse upgrades with
    ``state.upgrade_problem(scope)`` (see ``native.reject``)."""
    flights = _Flights()
    drain = Drain(flights, drain_grace)
    metrics = Metrics(_AllInstances(state))
    metrics.registry.register(_HostCollector(state))
    endpoint = NativeEndpoint(state, flights.sessions)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "DRAINING" if state.draining else "READY",
                             "instances": len(state.instances),
                             "sessions": state.connections})

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        app.state.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            state.draining = True
            await drain.wait()
            await asyncio.to_thread(state.instances.stop_all, stop_grace)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        WebSocketRoute(PATH, endpoint),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    if state.token is not None:
        # HTTP routes only: WebSocket upgrades are checked by guard.py, which can answer
        # them with a proper HTTP refusal.
        app.add_middleware(_HttpOnly, inner=BearerAuth, token=state.token.decode(),
                           public=("/health",))
    # (WebSocket upgrades: checked by the endpoint, which answers them with a real status)
    app.add_middleware(_HttpOnly, inner=OriginGuard, policy=state.origin_policy)
    app.add_middleware(Instrument, metrics=metrics)
    app.state.host = state
    app.state.drain = drain
    app.state.metrics = metrics

    real_begin = drain.begin

    def begin(stop: Callable[[], None] | None) -> None:
        state.draining = True
        real_begin(stop)

    drain.begin = begin  # type: ignore[method-assign]
    app.state.set_shutdown = lambda hook: None
    if on_shutdown is not None:
        app.state.on_shutdown = on_shutdown
    return app


class _HttpOnly:
    """Apply ``inner`` (an ASGI middleware class) to HTTP requests only."""

    def __init__(self, app: Any, inner: Any, **kwargs: Any):
        self.app = app
        self.wrapped = inner(app, **kwargs)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.wrapped(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _RedactQuery(logging.Filter):
    """uvicorn logs each WebSocket's path with its query string; a client that put a
    token in the URL must not have it written to the log."""

    _QUERY = re.compile(r"\?[^\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(self._QUERY.sub("?[redacted]", a) if isinstance(a, str)
                                else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = self._QUERY.sub("?[redacted]", record.msg)
        return True


def serve_host(*, host: str = "127.0.0.1", port: int = 7070, token: str | None = None,
               insecure: bool = False, store: str | None = None,
               limits: HostLimits | None = None, tags: Sequence[str] = (),
               allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = (),
               extra_routes: Sequence[BaseRoute] = (), drain_grace: float = 30.0,
               on_ready: Callable[[Any], None] | None = None) -> None:
    """Run a session server until SIGTERM/SIGINT (the first drains, a second exits at
    once). ``token`` defaults to $CORRAL_TOKEN; beyond loopback one is required unless
    ``insecure``. ``store`` defaults to ``$CORRAL_HOME/host`` or ``~/.cache/corral/host``."""
    import uvicorn

    if token is None:
        token = os.environ.get("CORRAL_TOKEN") or None
    check_binding(host, token, insecure)
    limits = limits or HostLimits()
    root = store or os.path.join(os.environ.get("CORRAL_HOME") or os.path.expanduser(
        "~/.cache/corral"), "host")
    state = HostState(ProgramStore(root, max_upload=limits.max_upload,
                                   max_chunk=limits.max_chunk),
                      limits=limits, token=token.encode() if token else None, bound=host,
                      tags=tuple(tags), allowed_hosts=tuple(allowed_hosts),
                      allowed_origins=tuple(allowed_origins), insecure=insecure)
    app = create_host_app(state, extra_routes=extra_routes, drain_grace=drain_grace)
    mount_pie(app, state, os.path.join(root, "pie"))
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            ws="websockets-sansio", ws_max_size=limits.max_frame,
                            ws_per_message_deflate=False, ws_ping_interval=20.0,
                            ws_ping_timeout=20.0, lifespan="on")
    server = draining_server(config, app)
    logging.getLogger("uvicorn.error").addFilter(_RedactQuery())
    access = logging.getLogger("corral.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    if on_ready is not None:
        on_ready(server)
    sock = listening_socket(host, port)
    real_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        # uvicorn logs where it listens only for sockets it bound itself; this one it is
        # given (for TCP_NODELAY), so the line is logged here, in uvicorn's words.
        await real_startup(sockets)
        if not server.should_exit:
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown,
                sock.getsockname()[1])

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


def mount_pie(app: Starlette, state: HostState, root: str) -> Any:
    """PIE's protocol at /v1/ws (docs/pie.md) beside the native one: the host's token
    (carried in PIE's identity, which is all pie-client can set), Host/Origin rules and
    drain; programs under ``root``."""
    from .pie.service import DEFAULT_MAX_FRAME, PieService

    def refuse(scope: dict) -> tuple[int, str] | None:
        problem = guard.host_origin_problem(scope, state.bound, state.allowed_hosts,
                                            state.allowed_origins)
        if problem is not None:
            return 403, problem
        if state.draining:
            return 503, "the server is shutting down"
        return None

    service = PieService(root, token=state.token.decode() if state.token else None,
                         max_frame=min(DEFAULT_MAX_FRAME, state.limits.max_frame // 2),
                         env_root=state.env_root, guard=refuse)
    service.mount(app)
    return service
