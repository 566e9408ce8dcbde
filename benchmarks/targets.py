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


class AsyncNoop:
    """The no-op target with an async method: every method async, so the worker's event
    loop reads the calls (worker/main.py)."""

    async def noop(self):
        """Do nothing, as a task on the worker's loop."""


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


# -- bench_values.py: big values --------------------------------------------------------------
# Still import-free at module level: numpy arrives as the arguments' type, and the Pipe
# child imports pickle only when it runs.


class Values:
    """The big-values target: sum, echo, and a light touch of a shared array."""

    def sum_array(self, arr):
        """The array's sum as a Python float (the worker reads every byte once)."""
        return float(arr.sum())

    def echo(self, value):
        """Return the argument (an array or bytes goes back out of band: one more copy)."""
        return value

    def touch(self, arr):
        """Something small from a big array: its shape and its first and last elements
        (reads two cache lines, whatever the size)."""
        flat = arr.reshape(-1)
        return [list(arr.shape), float(flat[0]) + float(flat[-1])]


def pipe_values(conn):
    """The Pipe baseline's child for bench_values.py: the old way to move big values.

    Each request is an op name, then its payload. ``sum``/``echo`` (arrays): a pickle
    protocol 5 header and its out-of-band buffers (``send_bytes`` each); ``sum`` answers
    with a pickled float, ``echo`` sends the array back the same way. ``bytes``: one
    ``send_bytes`` message, echoed as it is. Returns when the host closes its end.
    """
    import pickle

    recv = conn.recv_bytes
    send = conn.send_bytes
    while True:
        try:
            op = recv()
        except (EOFError, OSError):
            return
        if op == b"bytes":
            send(recv())
            continue
        name, nbuf = op.split(b":")
        head = recv()
        bufs = [recv() for _ in range(int(nbuf))]
        arr = pickle.loads(head, buffers=bufs)
        if name == b"sum":
            send(pickle.dumps(float(arr.sum()), protocol=5))
        else:
            out = []
            head = pickle.dumps(arr, protocol=5, buffer_callback=out.append)
            send(b"%d" % len(out))
            send(head)
            for b in out:
                send(b.raw())
        del arr, bufs


class NoopEcho(Noop):
    """The remote benchmark's target: a no-op and an echo."""

    def echo(self, value):
        return value
