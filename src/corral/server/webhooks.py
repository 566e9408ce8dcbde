"""Webhooks: POST the prediction's JSON to its ``webhook`` URL on the events its
``webhook_events_filter`` names (start, output, logs, completed), in order, each retried
with exponential backoff."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("corral.server")


class WebhookSender:
    def __init__(self, *, retries: int = 5, backoff: float = 0.1, max_backoff: float = 5.0,
                 timeout: float = 10.0):
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._client: Any = None
        self._tasks: set[asyncio.Task] = set()

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    def attach(self, pred: Any) -> None:
        """Send ``pred``'s events (those its filter keeps) to its webhook, one at a time."""
        if not pred.webhook:
            return
        queue: asyncio.Queue = asyncio.Queue()

        def listener(event: str, payload: Any) -> None:
            if event in pred.events_filter:
                queue.put_nowait((event, pred.to_json()))
            if event == "completed":
                queue.put_nowait(None)

        pred.listeners.append(listener)
        task = asyncio.get_running_loop().create_task(self._pump(pred.webhook, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, url: str, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            await self.post(url, item[1])

    async def post(self, url: str, body: dict) -> bool:
        """POST ``body``; retry connection errors and 5xx/429 answers with backoff."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http().post(url, json=body)
                if resp.status_code < 500 and resp.status_code != 429:
                    return True
                why = f"answer {resp.status_code}"
            except Exception as exc:  # noqa: BLE001 - any failure is retried
                why = type(exc).__name__
            if attempt == self.retries:
                log.warning("webhook for prediction %s gave up after %d tries (%s)",
                            body.get("id"), attempt + 1, why)
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
