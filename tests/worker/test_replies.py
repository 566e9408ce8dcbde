"""The worker's reply batching (worker/replies.py) over a real Unix socket pair.

A burst of calls buffered in the worker is answered in writes of at most ``HOLD_MAX``
replies: the host gets the first replies while the worker still runs the rest of the
burst (holding the whole burst made the two processes take turns). The host side here
reads without blocking, so a reply that was held shows as missing instead of a hang.
"""

from __future__ import annotations

import socket

import pytest

from corral.protocol import messages as m
from corral.protocol.framing import FrameReader, FrameWriter
from corral.protocol.values import make_decoder, make_encoder
from corral.worker.replies import HOLD_MAX, Replies


@pytest.fixture
def sides():
    host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.settimeout(10.0)  # (the host's end only reads without waiting)
    yield host, worker
    host.close()
    worker.close()


def _arrived(reader: FrameReader, decode) -> list[int]:
    """The ids of every reply that has reached the host so far (never blocks)."""
    ids = []
    while True:
        frame = reader.read(nowait=True)
        if not len(frame):
            return ids
        ids.append(decode(frame).id)


def test_a_burst_is_answered_in_writes_of_hold_max_replies(sides):
    host, worker = sides
    burst = 64  # a pipelining window's worth (Worker's prefetch=63)
    encode = make_encoder().encode
    FrameWriter(host, make_encoder()).send_frames(
        [encode(m.Call(i, "noop", [], {})) for i in range(1, burst + 1)])
    # The worker reads the first call: the rest of the burst is in its buffer now.
    worker_in = FrameReader(worker)
    worker_in.read()
    replies = Replies(FrameWriter(worker, make_encoder()), worker_in)
    host_in, decode = FrameReader(host), make_decoder(m.WorkerData, False).decode
    got: list[int] = []
    for call_id in range(1, burst + 1):
        replies.send(m.Done(call_id, None, 0.0))
        if call_id < burst:
            worker_in.read()  # the next call of the burst (still buffered: held replies)
        got += _arrived(host_in, decode)
        # Never more than HOLD_MAX - 1 replies wait while the worker goes on.
        assert call_id - len(got) < HOLD_MAX, (call_id, got)
        if call_id == burst // 2:  # whatever HOLD_MAX is: the host works while this side does
            assert len(got) >= burst // 4, got
    # The last call had nothing buffered behind it: answered at once, with what was held.
    assert got == list(range(1, burst + 1))

