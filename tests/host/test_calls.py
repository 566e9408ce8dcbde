"""Calling a target: every kind of method, streaming, slots, the async API."""

import asyncio
import os
import queue
import threading

import pytest

import corral
from conftest import fixture_ref


def test_call_predict_and_keyword_arguments(basic):
    assert basic.call("add", 2, b=5) == 7
    assert basic.call("add", a=1) == 2
    assert basic.predict(21) == 42
    assert basic.predict(x=4) == 8


def test_async_method(basic):
    assert basic.call("aadd", 2, 3) == 5


def test_generators_stream_and_call_collects_chunks(basic):
    assert list(basic.stream("count", 4)) == [0, 1, 2, 3]
    assert list(basic.stream("acount", 3)) == [0, 1, 2]
    assert basic.call("count", 3) == [0, 1, 2]
    assert basic.submit("acount", 2).result() == [0, 1]


def test_stream_of_a_plain_method_yields_its_result_once(basic):
    assert list(basic.stream("add", 1, 1)) == [2]


def test_first_chunk_arrives_while_the_generator_still_runs(basic, tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    stream = basic.stream("gated", fifo)
    got: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [got.put(x) for x in stream])
    reader.start()
    # The generator is blocked on the fifo: only its first chunk can have been sent.
    assert got.get(timeout=10) == "first"
    assert got.empty()
    with open(fifo, "w") as f:
        f.write("go")
    assert got.get(timeout=10) == "second"
    reader.join(10)
    assert not reader.is_alive()


def test_submit_returns_a_concurrent_future(basic):
    futures = [basic.submit("add", i, b=i) for i in range(50)]
    assert [f.result(timeout=10) for f in futures] == [2 * i for i in range(50)]
    assert all(f.run_time is not None and f.run_time >= 0 for f in futures)


def test_calls_from_many_threads(basic):
    results = {}

    def worker(n):
        results[n] = [basic.call("add", n, b=i) for i in range(30)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {n: [n + i for i in range(30)] for n in range(8)}


def test_sync_slots_run_calls_at_once_on_threads():
    with corral.Worker(fixture_ref("basic:Basic"), slots=3) as w:
        futures = [w.submit("barrier", 3) for _ in range(3)]
        idents = {f.result(timeout=20) for f in futures}
        assert len(idents) == 3  # three threads, all inside at the same time


def test_one_slot_runs_one_call_at_a_time(basic):
    # With one slot, two barrier(2) calls can never meet: the first one times out.
    first = basic.submit("barrier", 2, 0.5)
    second = basic.submit("barrier", 2, 0.5)
    with pytest.raises(corral.RemoteError, match="BrokenBarrierError"):
        first.result(timeout=10)
    with pytest.raises(corral.RemoteError):
        second.result(timeout=10)


def test_async_slots_run_on_one_event_loop():
    with corral.Worker(fixture_ref("basic:Basic"), slots=4) as w:
        futures = [w.submit("abarrier", 4) for _ in range(4)]
        assert [f.result(timeout=20) for f in futures] == [4] * 4


def test_more_calls_than_slots_wait_and_all_complete():
    with corral.Worker(fixture_ref("basic:Basic"), slots=2) as w:
        futures = [w.submit("sleep", 0.01) for _ in range(20)]
        assert [f.result(timeout=30) for f in futures] == [0.01] * 20


def test_async_api():
    async def main():
        async with corral.Worker(fixture_ref("basic:Basic"), slots=4) as w:
            assert await w.acall("add", 1, b=2) == 3
            results = await asyncio.gather(*(w.acall("aadd", i) for i in range(20)))
            assert results == [i + 1 for i in range(20)]
            fut = w.asubmit("count", 3)
            assert await fut == [0, 1, 2]
            chunks = [c async for c in w.astream("acount", 4)]
            assert chunks == [0, 1, 2, 3]
            with pytest.raises(ValueError, match="bad value"):
                await w.acall("boom")
    asyncio.run(main())



def test_acall_hands_out_its_future_which_every_asyncio_entry_point_takes(basic):
    """acall() on a running loop is the call's future and a coroutine at once: gather and
    wait_for take it as it is (no Task each), create_task, TaskGroup and
    run_until_complete drive it as a coroutine."""
    async def main():
        call = basic.acall("add", 1, b=2)
        assert isinstance(call, corral.AsyncCallFuture)
        assert asyncio.isfuture(call) and asyncio.iscoroutine(call)
        assert await call == 3
        assert await asyncio.create_task(basic.acall("add", 2)) == 3
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(basic.acall("aadd", i)) for i in range(10)]
        assert [t.result() for t in tasks] == [i + 1 for i in range(10)]
        assert await asyncio.wait_for(basic.acall("add", 5), 30) == 6
        assert await asyncio.shield(basic.acall("add", 6)) == 7
        assert await asyncio.gather(*(basic.acall("add", i) for i in range(64))) == \
            [i + 1 for i in range(64)]
        with pytest.raises(ValueError, match="bad value"):
            await asyncio.create_task(basic.acall("boom"))  # the error, through the task
    asyncio.run(main())
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(basic.acall("add", 3)) == 4  # (no loop running)
    finally:
        loop.close()


def test_acall_raises_an_error_in_making_the_call_where_it_is_awaited(basic):
    """As from an async def: acall() itself does not raise; gather with
    return_exceptions=True gets the error in its list, and the other calls run."""
    async def main():
        missing = basic.acall("no_such_method")
        unsendable = basic.acall("add", object())
        got = await asyncio.gather(missing, unsendable, basic.acall("add", 1),
                                   return_exceptions=True)
        assert isinstance(got[0], corral.MethodNotFound)
        assert isinstance(got[1], TypeError) and "args[0]" in str(got[1])
        assert got[2] == 2
        with pytest.raises(corral.MethodNotFound):
            await asyncio.create_task(basic.acall("no_such_method"))
    asyncio.run(main())


def test_acall_from_a_thread_with_no_loop_runs_on_the_loop_it_is_handed_to(basic):
    """With no loop running where acall() is called, it is a coroutine that starts the
    call where it runs: here on a loop in another thread (run_coroutine_threadsafe)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        call = basic.acall("add", 2, b=3)
        assert not asyncio.isfuture(call)
        assert asyncio.run_coroutine_threadsafe(call, loop).result(timeout=30) == 5
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

def test_unsendable_argument_is_refused_before_sending(basic):
    with pytest.raises(TypeError, match=r"kwargs\['b'\]\[1\]"):
        basic.call("add", 1, b=[1, object()])
    assert basic.call("add", 1) == 2  # nothing was sent; the worker is fine


def test_unsendable_return_value_is_a_remote_type_error(basic):
    with pytest.raises(corral.RemoteError, match="return value of bad_return"):
        basic.call("bad_return")
    assert basic.call("add", 1) == 2


def test_allow_pickle_lets_other_values_cross():
    class Point:
        def __init__(self, x):
            self.x = x

    def echo(value):
        return value

    with corral.Worker(echo, allow_pickle=True) as w:
        assert w.call("echo", Point(3)).x == 3


def test_calls_before_start_and_after_stop_are_invalid():
    w = corral.Worker(fixture_ref("basic:Basic"))
    with pytest.raises(corral.InvalidState, match="not started"):
        w.call("add", 1)
    w.start()
    w.stop()
    with pytest.raises(corral.InvalidState, match="stopped"):
        w.call("add", 1)


def test_map_pipelines_calls_and_keeps_order(basic):
    assert list(basic.map("add", range(100), range(100))) == [2 * i for i in range(100)]
    assert list(basic.map("predict", [1, 2, 3])) == [2, 4, 6]
    assert list(basic.starmap("add", [(1, 2), (3, 4)])) == [3, 7]
    assert list(basic.map("count", [2, 3])) == [[0, 1], [0, 1, 2]]


def test_map_raises_the_failed_item_in_its_turn(basic):
    results = basic.starmap("add", [(1,), ("a",), (2,)])
    assert next(results) == 2
    with pytest.raises(TypeError):
        next(results)


def test_map_with_more_items_than_the_window():
    with corral.Worker(fixture_ref("basic:Basic"), prefetch=2) as w:
        assert list(w.map("predict", range(500))) == [2 * i for i in range(500)]
        assert w.stats().calls_served == 500


def test_map_alongside_other_threads(basic):
    out = {}

    def other():
        out["calls"] = [basic.call("add", i) for i in range(200)]

    t = threading.Thread(target=other)
    t.start()
    assert list(basic.map("predict", range(300))) == [2 * i for i in range(300)]
    t.join(30)
    assert out["calls"] == [i + 1 for i in range(200)]


def test_a_lone_awaited_call_is_read_by_its_own_event_loop(monkeypatch):
    """One call awaited at a time (an HTTP handler's): its loop reads the reply itself,
    never handed over by the connection's reader thread (a thread wake-up and a
    cross-thread call per call, which cost more than the call)."""
    from corral.host.calls import AsyncCallFuture

    handed: list = []
    original = AsyncCallFuture._handed

    def counting(self, result, exc):
        handed.append(self.id)
        original(self, result, exc)

    monkeypatch.setattr(AsyncCallFuture, "_handed", counting)

    async def main(w):
        return [await w.acall("add", i) for i in range(50)]

    with corral.Worker(fixture_ref("basic:Basic")) as w:
        assert asyncio.run(main(w)) == [i + 1 for i in range(50)]
    assert handed == []


def test_a_big_call_awaited_on_uvloop_goes_through_whole():
    """uvloop makes a watched descriptor non-blocking (libuv's uv_poll_init): the data
    socket must stay blocking, or a call bigger than the socket buffer is cut off
    half-way by EAGAIN and the worker waits for the rest of its frame forever."""
    uvloop = pytest.importorskip("uvloop")
    text = "x" * (20 << 20)  # (a str travels inline: one frame far beyond the buffer)

    async def main(w):
        # (bounded: the defect this guards against hangs rather than fails)
        return [len(await asyncio.wait_for(w.acall("greet", text), 60)) for _ in range(2)]

    with corral.Worker(fixture_ref("basic:Basic"), max_frame=64 << 20) as w:
        expected = len(w.call("greet", text))
        assert uvloop.run(main(w)) == [expected, expected]


def test_a_settle_callback_runs_before_the_awaiting_code_resumes():
    """add_settle_callback: called the moment the call settles, so what it records is
    there when the awaiting code resumes (asyncio's done callbacks run a turn later),
    for a result, an error and a cancellation, and at once on a settled call."""
    async def main(w):
        seen: list = []

        def note(fut):
            seen.append(("result", fut.result()) if not fut.cancelled()
                        and fut.exception() is None else
                        ("cancelled",) if fut.cancelled() else ("error", str(fut.exception())))

        fut = w.asubmit("add", 1)

        async def waiter():
            value = await fut
            return value, list(seen)

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # the task awaits first: it is woken before any callback
        fut.add_done_callback(lambda f: seen.append(("done callback",)))
        fut.add_settle_callback(note)
        # Resumed, it sees what the settle callback noted, and not the done callback's.
        assert await task == (2, [("result", 2)])
        assert seen == [("result", 2), ("done callback",)]

        seen.clear()
        fut = w.asubmit("boom")
        fut.add_settle_callback(note)
        with pytest.raises(ValueError):
            await fut
        assert seen == [("error", "builtins.ValueError: bad value")]

        seen.clear()
        fut = w.asubmit("sleep", 30)
        fut.add_settle_callback(note)
        fut.cancel()
        assert seen == [("cancelled",)]

        seen.clear()
        fut.add_settle_callback(note)  # settled already: at once
        assert seen == [("cancelled",)]

    with corral.Worker(fixture_ref("basic:Basic"), slots=2) as w:
        asyncio.run(main(w))
    with corral.Pool(fixture_ref("basic:Basic"), workers=1, slots=2) as pool:
        asyncio.run(main(pool))


def test_a_failing_settle_callback_fails_nothing_else():
    """An error in a settle callback goes to the loop's exception handler; the call's
    result and the callbacks after it are unharmed."""
    async def main(w):
        reported: list = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: reported.append(ctx["exception"]))
        after: list = []
        fut = w.asubmit("add", 3)
        fut.add_settle_callback(lambda f: 1 / 0)
        fut.add_settle_callback(lambda f: after.append(f.result()))
        assert await fut == 4
        assert after == [4]
        assert [type(e) for e in reported] == [ZeroDivisionError]

    with corral.Worker(fixture_ref("basic:Basic")) as w:
        asyncio.run(main(w))


def test_big_calls_pass_when_the_hosts_socket_was_made_non_blocking_behind_its_back():
    # As uvloop's add_reader does to a descriptor, for every thread (framing.py).
    with corral.Worker(fixture_ref("basic:Basic"), timeout=30) as w:
        os.set_blocking(w._conn._data.fileno(), False)
        name = "n" * (8 * 1024 * 1024)  # frames far beyond the socket's buffers, both ways
        assert w.call("greet", name) == "hello, " + name
        futures = [w.submit("greet", str(i) * 1_000_000) for i in range(4)]
        assert [f.result() for f in futures] == ["hello, " + str(i) * 1_000_000
                                                 for i in range(4)]
        assert w.call("add", 1) == 2
