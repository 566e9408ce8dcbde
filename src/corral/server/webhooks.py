"""Webhooks: POST the prediction's JSON to its ``webhook`` URL on the events its
``webhook_events_filter`` names (start, output, logs, completed), in order, each retried
with exponential backoff.

Sends are coalesced, as Cog's are (``COG_THROTTLE_RESPONSE_INTERVAL``): ``start`` and
``completed`` always go out, each with the record as it was then; ``output`` and ``logs``
updates go out at most once per ``throttle`` seconds, with the record as it is when
sent (the latest state wins: a model printing 100,000 lines costs a handful of POSTs, not
100,000 snapshots of a growing record). At most ``max_pending`` bodies wait per
prediction; with ``throttle=0`` every update is sent while fewer than that wait, and
later ones are folded into the next send.

Every POST goes to an address checked just before it (outbound.py), and its body is
encoded by msgspec (a NaN in an output is ``null``, so the body is always valid JSON).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import msgspec

from .outbound import OutboundPolicy, OutboundRefused

log = logging.getLogger("corral.server")

#: Seconds between two output/logs updates of one prediction (Cog's default is 0.5).
DEFAULT_THROTTLE = 0.5
DEFAULT_MAX_PENDING = 16
_ALWAYS = ("start", "completed")
_encode = msgspec.json.Encoder().encode


class _Hook:
    """One prediction's webhook: bodies waiting to be sent, and whether a newer state is
    waiting to be rendered (``dirty``)."""

    def __init__(self, pred: Any, max_pending: int, throttle: float):
        self.pred = pred
        self.max_pending = max_pending
        self.throttle = throttle
        self.pending: collections.deque[bytes] = collections.deque()
        self.dirty = False
        self.ended = False
        self.wake = asyncio.Event()

    def on_event(self, event: str, payload: Any) -> None:
        pred = self.pred
        if event == "completed":
            self.ended = True
        if event in pred.events_filter:
            if event in _ALWAYS:
                self.pending.append(_encode(pred.to_json()))
                self.dirty = False  # this body holds every change so far
            elif self.throttle <= 0 and len(self.pending) < self.max_pending:
                self.pending.append(_encode(pred.to_json()))
            else:
                self.dirty = True
        self.wake.set()


class WebhookSender:
    def __init__(self, *, retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0,
                 timeout: float = 10.0, policy: OutboundPolicy | None = None,
                 throttle: float = DEFAULT_THROTTLE,
                 max_pending: int = DEFAULT_MAX_PENDING):
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.policy = policy if policy is not None else OutboundPolicy()
        self.throttle = throttle
        self.max_pending = max_pending
        self.sent = 0  # POSTs made (tries, retries included): for tests and benchmarks
        self._client: Any = None
        self._tasks: set[asyncio.Task] = set()

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            # follow_redirects=False (httpx's default): a redirect could lead anywhere.
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    def attach(self, pred: Any) -> None:
        """Send ``pred``'s events (those its filter keeps) to its webhook."""
        if not pred.webhook:
            return
        hook = _Hook(pred, self.max_pending, self.throttle)
        pred.listeners.append(hook.on_event)
        task = asyncio.get_running_loop().create_task(self._pump(hook))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, hook: _Hook) -> None:
        loop = asyncio.get_running_loop()
        last = -float("inf")
        url = hook.pred.webhook
        while True:
            if not hook.pending and not hook.dirty:
                if hook.ended:
                    return
                await hook.wake.wait()
            hook.wake.clear()
            while hook.pending:
                await self.post(url, hook.pending.popleft())
                last = loop.time()
            # An update: wait out the throttle (start/completed cut it short, and go first).
            while hook.dirty and not hook.pending and not hook.ended:
                left = last + self.throttle - loop.time()
                if left <= 0:
                    break
                hook.wake.clear()
                try:
                    await asyncio.wait_for(hook.wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            if hook.dirty and not hook.pending:
                hook.dirty = False
                await self.post(url, _encode(hook.pred.to_json()))
                last = loop.time()

    async def post(self, url: str, body: bytes | dict) -> bool:
        """POST ``body``; retry connection errors and 5xx/429 answers with backoff. The
        URL is checked (and its address pinned) before each try."""
        if not isinstance(body, bytes):
            body = _encode(body)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                target, headers, extensions = await self.policy.pin(url)
            except OutboundRefused as exc:
                log.warning("webhook not sent: %s", exc)
                return False
            headers["Content-Type"] = "application/json"
            try:
                self.sent += 1
                resp = await self._http().post(target, content=body, headers=headers,
                                               extensions=extensions)
                if resp.status_code < 500 and resp.status_code != 429:
                    return True
                why = f"answer {resp.status_code}"
            except Exception as exc:  # noqa: BLE001 - any failure is retried
                why = type(exc).__name__
            if attempt == self.retries:
                log.warning("webhook to %s gave up after %d tries (%s)",
                            url.split("?", 1)[0], attempt + 1, why)
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        return False

    async def aclose(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
