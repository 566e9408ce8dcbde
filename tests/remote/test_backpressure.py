"""A client that stops reading costs the server a bounded amount of memory."""

import msgspec
import psutil

from conftest import wait_until
from corral.remote import protocol as p
from remote.conftest import TOKEN
from remote.raw import Raw


def _stats(raw, instance, seq):
    raw.send(p.Query(seq, instance, "stats"))
    ans = raw.answer(seq)
    assert isinstance(ans, p.Answer), ans
    return msgspec.msgpack.decode(ans.value)


def test_a_client_that_stops_reading_costs_bounded_memory(host, program):
    server = psutil.Process(host.proc.pid)
    rss0 = server.memory_info().rss
    reader = Raw(host.url, TOKEN)
    reader.send(p.Launch(seq=1, program=program.id, target="remote_model.py:Model"))
    info = msgspec.msgpack.decode(reader.answer(1, timeout=60).value, type=p.InstanceInfo)
    side = Raw(host.url, TOKEN, identity=reader.identity)  # the same client, another link
    try:
        side.send(p.Attach(1, info.id))
        assert isinstance(side.answer(1), p.Answer)
        # 1 MiB chunks, as fast as the worker makes them; credit for 4, then no reading
        payload = msgspec.msgpack.encode([[], {"size": 1 << 20}, None])
        reader.send(p.Call(1, info.id, "forever", msgspec.Raw(payload), credit=4))
        peak = [0]
        seq = iter(range(10, 10_000))

        def call_ended():
            peak[0] = max(peak[0], server.memory_info().rss - rss0)
            return _stats(side, info.id, next(seq))["busy"] == 0 and peak[0] > 0

        wait_until(lambda: _stats(side, info.id, next(seq))["busy"] == 1, 30, "the stream")
        wait_until(call_ended, 60, "the server to cancel the unread stream")
        # bounded: the stream buffer (64 MiB) and the socket's, not what the worker made
        assert peak[0] < 300 << 20, f"the server grew by {peak[0] >> 20} MiB"
        print(f"server RSS peak growth: {peak[0] >> 20} MiB")
        got = []
        while True:
            msg = reader.recv()
            got.append(msg)
            if isinstance(msg, p.Failed):
                break
        assert msg.error.cls == "StreamOverflow"
        assert sum(isinstance(m, tuple) for m in got) <= 4  # only the chunks it had credit for
    finally:
        reader.close()
        side.close()
    wait_until(lambda: not any(pid in [c.pid for c in server.children(recursive=True)]
                               for pid in info.pids), 30, "the instance to end")
