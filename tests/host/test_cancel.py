"""Cancellation stops the work in the worker: Future.cancel() (also while running), asyncio
task cancellation, closing a stream, and deadlines (timeout=). The caller always gets
Cancelled (or CallTimeout); the slot is reused only once the work has really stopped; code
stuck in C past cancel_grace costs the worker its life (it restarts)."""

import asyncio
import concurrent.futures

import pytest

import corral
from conftest import fixture_ref, wait_until

CRASHY = fixture_ref("supervised:Crashy")


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def started(path) -> None:
    wait_until(lambda: "started" in lines(path), what="the call to start")


@pytest.fixture
def w():
    with corral.Worker(CRASHY, cancel_grace=5.0) as w:
        yield w


@pytest.mark.parametrize("method", ["spin", "sleep"])
def test_cancel_stops_a_running_sync_call_on_the_main_thread(w, tmp_path, method):
    marker = tmp_path / "marker"
    pid = w.pid
    fut = w.submit(method, 60, str(marker))
    started(marker)
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done()
    with pytest.raises(corral.Cancelled) as info:
        fut.result(timeout=0)
    assert isinstance(info.value, concurrent.futures.CancelledError)
    # The work really stopped (its finally ran), in the same process: no kill was needed.
    wait_until(lambda: "stopped" in lines(marker), what="the call to stop")
    assert w.call("pid") == pid
    assert w.health().busy == 0


@pytest.mark.parametrize("method", ["spin", "swallow_nothing"])
def test_cancel_stops_a_python_loop_on_a_slot_thread(tmp_path, method):
    with corral.Worker(CRASHY, slots=2, cancel_grace=5.0) as w:
        marker = tmp_path / "marker"
        pid = w.pid
        fut = w.submit("spin", 60, str(marker))
        started(marker)
        fut.cancel()
        wait_until(lambda: "stopped" in lines(marker), what="the call to stop")
        assert w.call("pid") == pid


def test_the_slot_is_reused_only_once_the_work_stopped(w, tmp_path):
    # One slot: the second call can only run after the first really stopped.
    marker = tmp_path / "marker"
    fut = w.submit("sleep", 60, str(marker))
    started(marker)
    after = w.submit("echo", "next")
    fut.cancel()
    assert after.result(timeout=10) == "next"
    assert lines(marker) == ["started", "stopped"]


def test_a_call_cancelled_before_it_runs_never_runs(w, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    running = w.submit("sleep", 60, str(first))
    started(first)
    queued = w.submit("sleep", 60, str(second))  # sent, waiting behind the first
    assert queued.cancel()
    running.cancel()
    assert w.call("echo", 1) == 1
    assert lines(second) == []
    with pytest.raises(corral.Cancelled):
        queued.result()


def test_cancel_after_the_end_returns_false(w):
    fut = w.submit("echo", 1)
    assert fut.result(timeout=10) == 1
    assert fut.cancel() is False and not fut.cancelled()


def test_asyncio_task_cancellation_cancels_the_call(w, tmp_path):
    marker = tmp_path / "marker"

    async def main():
        task = asyncio.ensure_future(w.acall("asleep", 60, str(marker)))
        await asyncio.to_thread(started, marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(wait_until, lambda: "stopped" in lines(marker))
        return await w.acall("echo", "after")

    assert asyncio.run(main()) == "after"
    assert lines(marker) == ["started", "cancelled", "stopped"]



def test_a_task_of_acall_cancelled_before_its_first_step_stops_the_call(w, tmp_path):
    """acall() started the call at once; a Task made of it and cancelled before it ran
    throws the cancel into it, which stops the call in the worker: the next call gets the
    only slot (it would wait out the 60 s sleep otherwise)."""
    marker = tmp_path / "marker"

    async def main():
        call = w.acall("asleep", 60, str(marker))
        task = asyncio.create_task(call)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert call.cancelled()
        return await asyncio.wait_for(w.acall("echo", "after"), 30)

    assert asyncio.run(main()) == "after"
    assert lines(marker) in ([], ["started", "cancelled", "stopped"])


def test_wait_for_an_acall_that_times_out_stops_the_call(w, tmp_path):
    marker = tmp_path / "marker"

    async def main():
        call = w.acall("asleep", 60, str(marker))
        await asyncio.to_thread(started, marker)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call, 0.2)
        assert call.cancelled()
        await asyncio.to_thread(wait_until, lambda: "stopped" in lines(marker))
        return await w.acall("echo", "after")

    assert asyncio.run(main()) == "after"
    assert lines(marker) == ["started", "cancelled", "stopped"]

def test_cancelling_an_asubmit_future_reads_as_cancelled_and_stops_the_call(w, tmp_path):
    """asyncio's convention for Future.cancel(): True, cancelled(), and awaiting it raises
    asyncio.CancelledError (it used to answer False and fail with corral.Cancelled,
    because stopping the call settled the future first)."""
    marker = tmp_path / "marker"

    async def main():
        fut = w.asubmit("asleep", 60, str(marker))
        await asyncio.to_thread(started, marker)
        assert fut.cancel() is True
        assert fut.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await fut
        await asyncio.to_thread(wait_until, lambda: "stopped" in lines(marker))
        return await w.acall("echo", "after")

    assert asyncio.run(main()) == "after"
    assert lines(marker) == ["started", "cancelled", "stopped"]


def test_closing_a_stream_stops_the_generator(w, tmp_path):
    marker = tmp_path / "marker"
    stream = w.stream("ticks", str(marker))
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    wait_until(lambda: "stopped" in lines(marker), what="the generator to stop")
    assert w.call("echo", 1) == 1


def test_closing_an_async_stream_stops_the_async_generator(w, tmp_path):
    marker = tmp_path / "marker"

    async def main():
        async with w.astream("aticks", str(marker)) as stream:
            got = []
            async for item in stream:
                got.append(item)
                if len(got) == 3:
                    break
        await asyncio.to_thread(wait_until, lambda: "stopped" in lines(marker))
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_nothing_of_a_cancelled_call_reaches_the_next_caller(w, tmp_path):
    marker = tmp_path / "marker"
    cancelled = w.watch("ticks", str(marker))
    next(cancelled)
    cancelled.close()
    events = list(w.watch("echo", "mine"))
    # Only the new call's own messages: its Done, and no tick or tick log.
    assert [type(e).__name__ for e in events] == ["Done"]
    assert events[-1].value == "mine"


def test_code_stuck_in_c_is_killed_after_the_grace_and_the_worker_restarts(tmp_path):
    marker = tmp_path / "marker"
    with corral.Worker(CRASHY, cancel_grace=0.5) as w:
        pid = w.pid
        fut = w.submit("stuck_in_c", str(marker))
        started(marker)
        assert fut.cancel()
        with pytest.raises(corral.Cancelled):
            fut.result(timeout=0)  # the caller has its answer at once
        assert w.call("pid") != pid  # killed after 0.5 s, restarted, serving again
        crash = w.crashes[-1]
        assert crash.pid == pid and "did not stop within cancel_grace" in crash.reason


def test_a_call_that_swallows_its_cancellation_is_killed_too(tmp_path):
    marker = tmp_path / "marker"
    with corral.Worker(CRASHY, cancel_grace=0.5) as w:
        pid = w.pid
        fut = w.submit("swallow", 60, str(marker))
        started(marker)
        fut.cancel()
        assert w.call("pid") != pid


def test_a_blocking_sleep_on_a_slot_thread_is_killed_after_the_grace(tmp_path):
    # Off the main thread a sleep in C cannot be interrupted: the grace period ends it.
    marker = tmp_path / "marker"
    with corral.Worker(CRASHY, slots=2, cancel_grace=0.5) as w:
        pid = w.pid
        fut = w.submit("sleep", 60, str(marker))
        started(marker)
        fut.cancel()
        wait_until(lambda: w.pid != pid and w.state == "ready", what="the restart")


# -- deadlines ------------------------------------------------------------------------------

def test_a_call_past_its_timeout_raises_call_timeout_and_stops(w, tmp_path):
    marker = tmp_path / "marker"
    pid = w.pid
    with pytest.raises(corral.CallTimeout) as info:
        w.options(timeout=0.3).call("sleep", 60, str(marker))
    assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.3
    wait_until(lambda: "stopped" in lines(marker), what="the call to stop")
    assert w.call("pid") == pid


def test_the_worker_default_timeout_applies_to_every_kind_of_call(tmp_path):
    with corral.Worker(CRASHY, timeout=0.3) as w:
        with pytest.raises(corral.CallTimeout):
            w.call("sleep", 60)
        with pytest.raises(corral.CallTimeout):
            w.submit("spin", 60).result(timeout=10)
        with pytest.raises(corral.CallTimeout):
            list(w.stream("ticks"))
        with pytest.raises(corral.CallTimeout):
            asyncio.run(w.acall("asleep", 60))
        assert w.call("echo", "quick") == "quick"  # a call within its deadline is unaffected
        # options() overrides the default.
        assert w.options(timeout=30).call("sleep", 0.5) == 0.5


def test_a_deadline_counts_while_the_call_waits_for_a_slot(w, tmp_path):
    marker = tmp_path / "marker"
    blocker = w.submit("sleep", 60, str(marker))
    started(marker)
    with pytest.raises(corral.CallTimeout):
        w.options(timeout=0.2).submit("echo", 1).result(timeout=10)
    blocker.cancel()
    assert w.call("echo", 2) == 2


def test_bad_timeouts_are_refused(w):
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError, match="timeout"):
            w.options(timeout=bad)
    with pytest.raises(ValueError, match="cancel_grace"):
        corral.Worker(CRASHY, cancel_grace=0)


def test_an_async_call_cancelled_before_it_starts_is_not_killed():
    # The first async call starts the worker's event loop: a cancel arriving meanwhile
    # must be noticed when the task starts, not thrown into a task that never ran.
    with corral.Worker(CRASHY, cancel_grace=5.0) as w:
        pid = w.pid
        for _ in range(5):
            fut = w.submit("asleep", 60)
            fut.cancel()
        assert w.call("pid") == pid
        assert w.health().busy == 0
