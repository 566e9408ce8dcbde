"""Everything PIE's sessions share: the program store, environments and their warm pools, the
process table, and the auth settings.

``PieService(root)`` is mounted into any Starlette app with ``service.route()`` (a WebSocket
route at ``/v1/ws``, the path pie-client appends) and started/stopped with the app's
lifespan (``async with service.running():``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from .processes import ProcessTable
from .store import Program, ProgramStore
from .warm import WarmPool

log = logging.getLogger("corral.pie")

DEFAULT_MAX_FRAME = 8 * 1024 * 1024  # PIE's is 7 MiB; a 256 KiB chunk frame is far below
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024  # a program's source
DEFAULT_MAX_FILE = 1024 * 1024 * 1024  # one transfer_file payload
MAX_UPLOADS_IN_FLIGHT = 16  # per session, as PIE


class PieService:
    """PIE's protocol on corral: programs in ``root``, each launch a corral worker process.

    ``token``: when set, a client must present it (``x-pie-identity: user:TOKEN``, or
    ``auth_identify`` with username ``user:TOKEN``) before anything but authentication.
    ``warm``: ready processes kept per environment. ``env_root``: where environments for
    ``[dependencies]`` are built (corral.plugins.envs; default: its cache). ``guard``:
    ``guard(scope) -> (status, text) | None``, the mounting server's own refusals of an
    upgrade (Host, Origin, draining), checked first.
    """

    def __init__(self, root: str | Path, *, token: str | None = None, warm: int = 4,
                 max_frame: int = DEFAULT_MAX_FRAME, max_upload: int = DEFAULT_MAX_UPLOAD,
                 max_file: int = DEFAULT_MAX_FILE, env_root: str | Path | None = None,
                 python: str | None = None, guard: Any = None):
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        self.store = ProgramStore(root)
        self.token = token.encode() if token is not None else None
        self.warm = warm
        self.max_frame = max_frame
        self.max_upload = max_upload
        self.max_file = max_file
        self.env_root = env_root
        self.python = python
        # guard(scope) -> (status, text) or None: the mounting server's own refusals
        # (Host, Origin, draining), checked before the identity.
        self.guard = guard
        self.processes = ProcessTable()
        self._pools: dict[tuple[str, ...], WarmPool] = {}
        self._pool_lock = threading.Lock()
        self._envs: Any = None

    def __repr__(self) -> str:  # never show the token
        return f"<PieService root={str(self.store.root)!r} auth={self.token is not None}>"

    # -- environments ---------------------------------------------------------------------

    def pool_for(self, requirements: tuple[str, ...]) -> WarmPool:
        """The warm pool for a dependency set, built (environment, fork server) if new.
        Blocking: call from a thread when it may build."""
        with self._pool_lock:
            pool = self._pools.get(requirements)
            if pool is not None:
                return pool
            if requirements:
                if self._envs is None:
                    from ...plugins.envs import EnvironmentCache

                    self._envs = EnvironmentCache(self.env_root)
                env = self._envs.ensure(list(requirements))
                pool = WarmPool(env.python, env.worker_env, size=max(1, self.warm // 2))
            else:
                pool = WarmPool(self.python, None, size=self.warm)
            self._pools[requirements] = pool
            return pool

    @property
    def started(self) -> bool:
        """Whether a pool exists yet (``start()`` or a first launch made one)."""
        return bool(self._pools)

    def ready_pool(self, program: Program) -> WarmPool | None:
        """The program's pool if it exists already (no blocking)."""
        return self._pools.get(program.manifest.dependencies)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the host environment's pool (blocking, about 100 ms)."""
        self.pool_for(())

    def close(self) -> None:
        """Kill every process and stop every pool (blocking)."""
        for proc in self.processes.all():
            proc.terminated = True
            proc.worker.kill()
        with self._pool_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    @contextlib.asynccontextmanager
    async def running(self, start: bool = True) -> AsyncIterator["PieService"]:
        """``async with service.running():`` in the app's lifespan. ``start=False`` leaves
        the first process pool to the first connection (a host that may never see a PIE
        client starts no processes for it)."""
        if start:
            await asyncio.to_thread(self.start)
        try:
            yield self
        finally:
            await asyncio.to_thread(self.close)

    def mount(self, app: Any, path: str = "/v1/ws") -> None:
        """Serve at ``path`` of a Starlette ``app`` and live with its lifespan (stopped
        before the app's own shutdown; processes start with the first PIE client)."""
        app.router.routes.append(self.route(path))
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[Any]:
            async with inner(a) as value:
                async with self.running(start=False):
                    yield value

        app.router.lifespan_context = lifespan

    def route(self, path: str = "/v1/ws") -> Any:
        """A Starlette WebSocketRoute serving PIE's protocol at ``path``."""
        from starlette.routing import WebSocketRoute

        from .endpoint import serve_session

        async def endpoint(websocket: Any) -> None:
            await serve_session(self, websocket)

        return WebSocketRoute(path, endpoint)
