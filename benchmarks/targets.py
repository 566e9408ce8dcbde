"""What the benchmarks run in child processes.

Deliberately import-free: this file is loaded by the corral worker (as a target file) and
imported by ``multiprocessing`` spawn children, and its own cost must not show up in the
cold-start or RSS figures.
"""


class Empty:
    """The empty target: nothing to set up, nothing to call (cold start)."""


class Noop:
    """The no-op target: one method that does nothing (latency, throughput, RSS)."""

    def noop(self):
        """Do nothing: measures the cost of a call."""


def noop():
    """The ProcessPoolExecutor's no-op task."""


def pipe_echo(conn, reply_size):
    """Baseline A's child: a bare ``multiprocessing.Pipe`` request/response loop.

    Answers every request with ``reply_size`` bytes; returns when the host closes its end.
    """
    reply = b"r" * reply_size
    recv = conn.recv_bytes
    send = conn.send_bytes
    while True:
        try:
            recv()
        except (EOFError, OSError):
            return
        send(reply)
