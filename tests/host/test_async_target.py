"""A target whose every method is async: the worker's event loop reads the data socket
itself (worker/main.py ``_data_on_loop``), so each call becomes a task with no hand-off
from the main thread. Everything a worker does must work the same there: concurrency on one
loop (the one async setup ran on), streams both ways, logs, errors, cancellation, shared
memory, the end of the worker; and on uvloop, which makes the watched socket non-blocking.
"""

import asyncio

import pytest

import corral
from conftest import fixture_ref, wait_until

ALL_ASYNC = fixture_ref("all_async:AllAsync")


@pytest.fixture(scope="module")
def w():
    with corral.Worker(ALL_ASYNC, slots=8) as worker:
        yield worker


def test_the_loop_reads_and_the_main_thread_parks(w):
    assert "_data_on_loop" in w.call("main_thread_in")


def test_calls_run_on_the_loop_async_setup_ran_on(w):
    assert w.call("where") == {"same_loop": True, "thread": "corral-loop",
                               "loop": "asyncio.unix_events"}
    assert w.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}


def test_calls_run_side_by_side_on_the_loop(w):
    futs = [w.submit("together", 8) for _ in range(8)]
    assert [f.result(timeout=30) for f in futs] == [8] * 8


def test_a_burst_of_pipelined_calls_all_answer_in_order(w):
    assert list(w.map("echo", range(3000))) == list(range(3000))

    async def main():
        return await asyncio.gather(*[w.acall("echo", i) for i in range(3000)])

    assert asyncio.run(main()) == list(range(3000))


def test_streams_both_ways_logs_and_errors(w):
    assert list(w.stream("count", 50)) == list(range(50))
    assert w.call("total", iter(range(1000))) == sum(range(1000))
    seen = []
    assert w.options(on_event=seen.append).call("chatty", 5) == 5
    assert [e.text for e in seen if isinstance(e, corral.Log)] == [f"line {i}"
                                                                   for i in range(5)]
    with pytest.raises(corral.RemoteError, match="no good") as info:
        w.call("fail", "no good")
    assert info.value.type_name.endswith("ValueError")
    assert w.call("echo", "after") == "after"  # one call's error fails that call only


def test_a_cancelled_call_stops_and_the_loop_goes_on(w, tmp_path):
    side = tmp_path / "side"
    fut = w.submit("forever", str(side))
    wait_until(lambda: side.exists() and side.read_text() == "started\n",
               what="the call to start")
    assert fut.cancel() is True
    with pytest.raises(corral.Cancelled):
        fut.result(timeout=0)
    assert w.call("echo", 1) == 1
    assert w.health().busy == 0


def test_big_values_cross_by_shared_memory_and_big_frames_in_full(w):
    big = bytes(range(256)) * (1 << 15)  # 8 MiB: out of band
    assert w.call("size", big) == len(big)
    assert w.call("echo", big) == big
    text = "x" * (3 << 20)  # 3 MiB in the frame itself, well over the socket's buffer
    assert w.call("echo", text) == text


def test_on_uvloop_big_frames_still_cross_whole():
    """uvloop makes a socket it watches non-blocking, for every thread of the process: a
    reply bigger than the socket buffer must still cross whole (the worker sets the socket
    back to blocking, and framing.py waits out EAGAIN should it not be)."""
    pytest.importorskip("uvloop")
    with corral.Worker(ALL_ASYNC, slots=2, env={"CORRAL_TEST_UVLOOP": "1"}) as w:
        assert w.call("where")["loop"].startswith("uvloop")
        text = "y" * (5 << 20)
        assert w.call("echo", text) == text
        assert list(w.map("echo", range(500))) == list(range(500))


def test_the_worker_ends_with_its_host_connection():
    w = corral.Worker(ALL_ASYNC).start()
    pid = w.pid
    assert w.call("pid") == pid
    w.stop()
    assert w.state == "stopped"
    # (the autouse fixture checks that no process is left)
