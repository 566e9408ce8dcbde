"""A thread blocked in a future's ``result()`` reads the worker's replies itself (issue 19,
host/connection.py ``lead_future``), with the reader thread as the fallback. What must
hold: every future ends exactly once, whoever reads; a future settled on another thread
(cancel, deadline, crash) frees its waiter at once, even while that waiter is the one
reading the socket; futures nobody waits on still complete (callbacks). Gates are FIFOs,
never clocks.
"""

import concurrent.futures as cf
import os
import threading

import pytest

import corral
from conftest import fixture_ref, open_fds

BASIC = fixture_ref("basic:Basic")


def _fifo(tmp_path, name="gate"):
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


def _open_gate(path, text="go"):
    with open(path, "w") as f:
        f.write(text)


def test_pipelined_futures_all_complete_in_order():
    with corral.Worker(BASIC, prefetch=63) as w:
        futs = [w.submit("add", i, i) for i in range(64)]
        out = []
        for i in range(2000):
            out.append(futs.pop(0).result())
            futs.append(w.submit("add", 64 + i, 64 + i))
        out.extend(f.result() for f in futs)
        assert out == [2 * i for i in range(2064)]


def test_many_threads_waiting_on_their_own_futures():
    with corral.Worker(BASIC, slots=4, prefetch=8) as w:
        results: dict[int, list] = {}

        def run(t: int) -> None:
            results[t] = [w.submit("add", t, i).result() for i in range(300)]

        threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {t: [t + i for i in range(300)] for t in range(6)}


def test_a_future_nobody_waits_on_completes_while_another_thread_reads(tmp_path):
    gate = _fifo(tmp_path)
    with corral.Worker(BASIC, slots=2) as w:
        blocked = w.submit("wait_fifo", gate)  # its waiter reads the socket below
        got = threading.Event()
        seen = []
        waiter = threading.Thread(target=lambda: seen.append(blocked.result()))
        waiter.start()
        quick = w.submit("add", 1, 2)
        quick.add_done_callback(lambda f: (seen.append(f.result()), got.set()))
        assert got.wait(30)  # delivered while the other call still blocks
        assert seen == [3]
        _open_gate(gate, "opened")
        waiter.join(30)
        assert seen == [3, "opened"]


def test_cancel_from_another_thread_frees_the_waiter_that_reads(tmp_path):
    gate = _fifo(tmp_path)
    with corral.Worker(BASIC) as w:
        fut = w.submit("wait_fifo", gate)
        raised = []

        def wait() -> None:
            try:
                fut.result()
            except BaseException as exc:  # noqa: BLE001
                raised.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        # Cancel only once the waiter is the thread reading the socket.
        conn = w._conn
        while conn._led is not fut:
            if not waiter.is_alive():
                break
            threading.Event().wait(0.001)
        assert fut.cancel()
        waiter.join(30)  # before the call stops: the gate is still shut
        assert not waiter.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], corral.Cancelled)
        assert w.call("add", 2, 3) == 5  # the cancel stopped the call (or its worker)


def test_a_deadline_frees_the_waiter_that_reads(tmp_path):
    gate = _fifo(tmp_path)
    with corral.Worker(BASIC) as w:
        fut = w.options(timeout=0.2).submit("wait_fifo", gate)
        with pytest.raises(corral.CallTimeout):
            fut.result()
        assert w.call("add", 2, 3) == 5


def test_a_crash_fails_the_waiter_that_reads():
    with corral.Worker(BASIC) as w:
        before = [w.submit("add", i, 0) for i in range(5)]
        dying = w.submit("exit_now", 3)
        with pytest.raises(corral.WorkerCrashed):
            dying.result()
        for i, f in enumerate(before):
            # Each ends once: with its result, or, when the crash came before its reply
            # left the worker (replies of a burst go out together), with the crash.
            assert f.exception() is None and f.result() == i \
                or isinstance(f.exception(), corral.WorkerCrashed)
        assert w.call("add", 2, 3) == 5  # restarted


def test_result_with_a_timeout_is_served_by_the_reader_thread(tmp_path):
    gate = _fifo(tmp_path)
    with corral.Worker(BASIC) as w:
        fut = w.submit("wait_fifo", gate)
        with pytest.raises(cf.TimeoutError):
            fut.result(timeout=0.05)
        _open_gate(gate, "late")
        assert fut.result(timeout=30) == "late"


def test_futures_with_callbacks_only_complete_through_the_reader_thread():
    with corral.Worker(BASIC, prefetch=16) as w:
        w.submit("add", 0, 0).result()  # a waiter read once: the reader stands by, then reads
        done = threading.Event()
        got = []
        lock = threading.Lock()

        def on_done(f):
            with lock:
                got.append(f.result())
                if len(got) == 200:
                    done.set()

        for i in range(200):
            w.submit("add", i, 1).add_done_callback(on_done)
        assert done.wait(30)
        assert sorted(got) == [i + 1 for i in range(200)]
        assert list(cf.as_completed([w.submit("add", 1, 1)], timeout=30))[0].result() == 2


def test_gathered_acalls_read_by_the_event_loop_all_complete():
    import asyncio

    async def main(w):
        out = []
        for k in range(20):
            out += await asyncio.gather(*[w.acall("add", k, i) for i in range(64)])
        return out

    with corral.Worker(BASIC, prefetch=63) as w:
        assert asyncio.run(main(w)) == [k + i for k in range(20) for i in range(64)]
        assert asyncio.run(main(w))[:3] == [0, 1, 2]  # a new loop takes over from a closed one
        assert w.submit("add", 1, 1).result() == 2  # and a thread after it


def test_a_cancelled_acall_task_ends_while_the_loop_reads():
    import asyncio

    async def main(w):
        task = asyncio.ensure_future(w.acall("abarrier", 2, 60.0))  # waits for a second
        quick = await w.acall("add", 1, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return quick, await w.acall("add", 3, 4)

    with corral.Worker(BASIC, slots=2) as w:
        assert asyncio.run(main(w)) == (3, 7)
        assert not w.crashes  # the worker stopped the call


def test_a_crash_fails_acalls_the_loop_waits_for():
    import asyncio

    async def main(w):
        return await asyncio.gather(w.acall("add", 1, 1), w.acall("exit_now", 3),
                                    return_exceptions=True)

    with corral.Worker(BASIC) as w:
        first, dying = asyncio.run(main(w))
        assert isinstance(dying, corral.WorkerCrashed)
        assert first == 2 or isinstance(first, corral.WorkerCrashed)
        assert w.call("add", 2, 3) == 5


def test_a_loop_that_ends_with_calls_in_flight_leaves_the_worker_usable():
    import asyncio

    async def main(w):
        # A call still running when asyncio.run() ends: its task is cancelled there, and the
        # worker's word that it stopped must still be read (by the reader thread: the loop
        # that read replies is gone), or new calls would be held back behind it.
        asyncio.ensure_future(w.acall("abarrier", 2, 60.0))
        return await w.acall("add", 1, 2)

    with corral.Worker(BASIC, slots=2) as w:
        assert asyncio.run(main(w)) == 3
        assert w.call("add", 2, 3) == 5
        assert w.submit("add", 3, 4).result() == 7
        assert w.pid is not None and not w.crashes  # stopped by the cancel, not killed


# A Worker stopped from its loop's own thread, right after a call went out while that loop
# watched the socket (the loop's next turn finds the descriptor closed), then another
# Worker on the same loop. Before the loop watched a descriptor of its own, uvloop (libuv)
# aborted the whole process there and asyncio's loop lost a later call: run in a child, so
# that an abort fails this test instead of ending pytest.
_STOPPED_ON_ITS_LOOP = """
import asyncio, sys
import corral

async def main():
    for _ in range(5):
        w = corral.Worker(sys.argv[2]).start()
        fut = w.asubmit("add", 1, 2)
        w.stop()  # on the loop's thread, before it turns
        try:
            print(await asyncio.wait_for(fut, 30))
        except corral.CorralError as exc:
            print(type(exc).__name__)
    w = corral.Worker(sys.argv[2]).start()
    print(await asyncio.wait_for(w.acall("add", 2, 3), 30))
    w.stop()

if sys.argv[1] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
print("ok")
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_worker_stopped_on_its_loop_with_a_call_out_leaves_the_loop_sound(loop):
    import subprocess
    import sys

    if loop == "uvloop":
        pytest.importorskip("uvloop")
    out = subprocess.run([sys.executable, "-c", _STOPPED_ON_ITS_LOOP, loop, BASIC],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split()
    # (stop() lets a call in flight finish, or fails it: either way the waiter completes)
    assert len(lines) == 7 and all(x in ("3", "WorkerStopped") for x in lines[:5])
    assert lines[5:] == ["5", "ok"]


@pytest.mark.parametrize("stop_from", ["the loop", "after the loop", "another thread"])
def test_the_loops_own_descriptor_is_closed_however_the_worker_stops(stop_from):
    """The loop keeps watching between calls (attach_loop): its descriptor is closed when
    the worker stops, whether on the loop's thread, after the loop has closed, or from
    another thread while the loop runs on."""
    import asyncio
    import threading
    import time

    with corral.Worker(BASIC) as w:  # what a first Worker opens once per process
        w.call("add", 1, 1)
    before = open_fds()
    w = corral.Worker(BASIC).start()

    async def main():
        for i in range(3):
            assert await w.acall("add", i, 1) == i + 1
        if stop_from == "the loop":
            w.stop()
        elif stop_from == "another thread":
            t = threading.Thread(target=w.stop)
            t.start()
            while t.is_alive():  # the loop goes on turning meanwhile
                await asyncio.sleep(0.01)
            # The loop lets go on the turn that reads the end of stream: wait for that
            # (bounded), rather than for a number of turns.
            deadline = time.monotonic() + 10
            while open_fds() != before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    if stop_from == "after the loop":
        assert w.call("add", 2, 2) == 4  # a thread's call, with the loop gone
        w.stop()
    assert open_fds() == before
