"""Graceful shutdown: stop taking predictions, let those in flight finish within a grace
period, then stop.

``Drain.begin(stop)`` (POST /shutdown, or SIGTERM through ``DrainingServer``) turns the app
to draining: new predictions are answered 503 while the server still listens, and once
every unfinished prediction has ended (or ``grace`` seconds have passed) ``stop()`` tells
the server to exit. The app's lifespan shutdown also waits (``wait``) before it cancels
what is left and stops the workers, so an app under another ASGI server drains too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

log = logging.getLogger("corral.server")

MESSAGE = "the server is shutting down: it finishes the predictions in flight and takes no " \
          "new ones"


class Drain:
    def __init__(self, service: Any, grace: float = 30.0):
        self.service = service
        self.grace = grace
        self.draining = False
        self._deadline: float | None = None
        self._task: asyncio.Task | None = None

    def begin(self, stop: Callable[[], None] | None) -> None:
        """Start draining (once); call ``stop`` when it is over. On the event loop."""
        if self.draining:
            return
        self._start()
        log.info("draining: %d predictions in flight, grace %ss", len(self._unfinished()),
                 self.grace)
        self._task = asyncio.get_running_loop().create_task(self._then(stop))

    async def _then(self, stop: Callable[[], None] | None) -> None:
        await self.wait()
        if stop is not None:
            stop()

    def _start(self) -> None:
        self.draining = True
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self.grace

    def _unfinished(self) -> list[Any]:
        return [p for p in self.service.records.values() if not p.finished]

    async def wait(self) -> bool:
        """Wait for the unfinished predictions, at most ``grace`` seconds in all since the
        drain began; True if they all ended."""
        self._start()
        pending = [asyncio.ensure_future(p.done.wait()) for p in self._unfinished()]
        if not pending:
            return True
        left = max(0.0, self._deadline - asyncio.get_running_loop().time())
        done, rest = await asyncio.wait(pending, timeout=max(left, 0.001))
        for fut in rest:
            fut.cancel()
        if rest:
            log.warning("drain: %d predictions still running after %ss; canceling them",
                        len(rest), self.grace)
        return not rest


def draining_server(config: Any, drain_app: Any) -> Any:
    """A ``uvicorn.Server`` whose first SIGTERM/SIGINT drains the app (``app.state.drain``)
    before exiting; a second one exits at once (uvicorn's own handling)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            drain = drain_app.state.drain
            loop = getattr(drain_app.state, "loop", None)
            if drain.draining or loop is None:
                super().handle_exit(sig, frame)
                return
            stop = lambda: uvicorn.Server.handle_exit(self, sig, frame)  # noqa: E731
            loop.call_soon_threadsafe(drain.begin, stop)

    return DrainingServer(config)
