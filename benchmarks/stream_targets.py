"""Targets of bench_streams.py (imports numpy only when a method runs)."""

import time


class Add:
    """One stage: x + k."""

    def __init__(self, k: float = 1.0):
        self.k = k

    def forward(self, x):
        return x + self.k


class Expand:
    """Makes a big intermediate (n float64s) from a small input."""

    def __init__(self, n: int = 12_500_000):
        self.n = n

    def setup(self, n: int = 12_500_000) -> None:
        self.n = n

    def forward(self, x):
        import numpy as np

        out = np.empty(self.n)
        out.fill(float(x[0]))
        return out


class Reduce:
    def forward(self, x):
        return float(x[-1]) * len(x)


class Streams:
    def consume(self, chunks) -> int:
        """Take every chunk of a streamed argument; the bytes seen."""
        return sum(len(c) for c in chunks)

    def produce(self, n: int, size: int):
        import numpy as np

        for i in range(n):
            a = np.empty(size, dtype=np.uint8)
            a.fill(i % 251)
            yield a

    def noop(self) -> None:
        return None


def pipe_consume(conn) -> None:
    """The Pipe baseline: read ``n`` chunks, answer with the bytes seen; "stop" ends."""
    recv, send = conn.recv_bytes, conn.send_bytes
    while True:
        head = recv()
        if head == b"stop":
            return
        n = int(head)
        total = 0
        for _ in range(n):
            total += len(recv())
        send(b"%d" % total)


def slow(seconds: float) -> None:
    time.sleep(seconds)
