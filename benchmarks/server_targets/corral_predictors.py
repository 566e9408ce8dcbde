"""corral targets for bench_server.py: a no-op that echoes its ``text`` input."""


class Echo:
    """Sync: the Pool of 2 sync workers, and the 1-worker sequential case."""

    def predict(self, text: str = "") -> str:
        return text


class AsyncEcho:
    """Async: one worker with 8 slots."""

    async def predict(self, text: str = "") -> str:
        return text
