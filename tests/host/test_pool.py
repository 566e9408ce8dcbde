"""Pool: calls spread over several real worker processes; a bounded queue; crashes fail only
their worker's calls, and idempotent calls in flight are retried on another worker.

Calls that must stay running are held at a gate (``Pooled.wait_for(path)`` returns once the
test creates ``path``); ``marker`` files say which calls have started, and where.
"""

import asyncio
import os
import signal
import threading

import pytest

import corral
from conftest import fixture_ref, wait_until

POOLED = fixture_ref("pooled:Pooled")


class Gate:
    """A gate file and a marker file: ``held()`` is the call arguments of a gated call."""

    def __init__(self, tmp_path, name="gate"):
        self.path = tmp_path / name
        self.marker = tmp_path / f"{name}.started"

    def held(self):
        return (str(self.path), str(self.marker))

    def started(self) -> list[int]:
        if not self.marker.exists():
            return []
        return [int(line) for line in self.marker.read_text().split()]

    def wait_started(self, n):
        wait_until(lambda: len(self.started()) >= n, what=f"{n} gated calls to start")

    def open(self):
        self.path.touch()


def kill(worker):
    os.kill(worker.pid, signal.SIGKILL)


def wait_full_strength(pool, old_pids=()):
    wait_until(lambda: pool.ready == len(pool.workers)
               and not set(old_pids) & {w.pid for w in pool.workers},
               timeout=30, what="every worker to be ready again")


def test_the_worker_call_surface(tmp_path):
    with corral.Pool(POOLED, workers=2) as pool:
        assert pool.call("echo", (1, "a")) == (1, "a")
        assert pool.submit("echo", x=[1]).result(timeout=10) == [1]
        assert list(pool.map("echo", range(20))) == list(range(20))
        assert list(pool.starmap("echo", [(i,) for i in range(5)])) == list(range(5))
        assert list(pool.stream("count", 4)) == [0, 1, 2, 3]
        assert pool.call("count", 3) == [0, 1, 2]
        assert [e.value for e in pool.watch("count", 2) if isinstance(e, corral.Chunk)] == [0, 1]
        assert pool.options(context={"user": "u1"}).call("context") == {"user": "u1"}
        # Events are the call's, and reach on_event as they arrive.
        seen = []
        fut = pool.options(on_event=seen.append).submit("talk", 3)
        pid = fut.result(timeout=10)
        assert fut.logs == ["line 0", "line 1", "line 2"]
        assert fut.metrics == {"said": 3} and fut.progress.step == 3
        assert fut.run_time is not None and fut.attempts == 1
        assert fut.worker.pid == pid
        assert [type(e).__name__ for e in seen].count("Log") == 3
        # A user error passes through as it is, and is not retried.
        with pytest.raises(ValueError, match="bad value"):
            pool.options(idempotent=True).call("boom")
        assert pool.stats().retries == 0
        with pytest.raises(corral.MethodNotFound):
            pool.call("nope")
        with pytest.raises(TypeError, match="cannot send"):
            pool.call("echo", threading.Lock())
        assert isinstance(pool.submit("pid"), corral.PoolFuture)


def test_a_call_goes_to_the_least_loaded_worker(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=1) as pool:
        first = pool.submit("wait_for", *gate.held())
        second = pool.submit("wait_for", *gate.held())
        gate.wait_started(2)
        assert first.worker is not second.worker
        assert sorted(gate.started()) == sorted(w.pid for w in pool.workers)
        gate.open()
        pids = {first.result(timeout=10), second.result(timeout=10)}
        assert pids == {w.pid for w in pool.workers}


def test_a_full_pool_queues_calls_then_refuses_them(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=1, prefetch=0, max_queue=2) as pool:
        running = [pool.submit("wait_for", *gate.held()) for _ in range(2)]
        gate.wait_started(2)
        queued = [pool.submit("echo", i) for i in range(2)]
        assert pool.stats().queued == 2 and pool.health().queued == 2
        assert not any(f.done() for f in queued) and all(f.worker is None for f in queued)
        with pytest.raises(corral.QueueFull, match=r"2 calls wait already \(max_queue=2\)"):
            pool.submit("echo", "one too many")
        with pytest.raises(corral.QueueFull):
            pool.call("echo", "blocking too")
        assert pool.stats().rejected == 2
        gate.open()
        assert [f.result(timeout=10) for f in queued] == [0, 1]
        assert {f.result(timeout=10) for f in running} == {w.pid for w in pool.workers}
        assert pool.stats().queued == 0 and pool.stats().in_flight == 0


def test_no_queue_at_all_with_max_queue_0(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=1, slots=1, prefetch=0, max_queue=0) as pool:
        held = pool.submit("wait_for", *gate.held())
        with pytest.raises(corral.QueueFull, match="max_queue=0"):
            pool.submit("echo", 1)
        gate.open()
        held.result(timeout=10)
        assert pool.call("echo", 2) == 2


def test_a_crash_fails_only_the_calls_on_that_worker(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=2) as pool:
        futs = [pool.submit("wait_for", *gate.held()) for _ in range(4)]
        gate.wait_started(4)
        victim = futs[0].worker
        doomed = [f for f in futs if f.worker is victim]
        spared = [f for f in futs if f.worker is not victim]
        assert len(doomed) == 2 and len(spared) == 2
        old = victim.pid
        kill(victim)
        for fut in doomed:
            with pytest.raises(corral.WorkerCrashed) as info:
                fut.result(timeout=10)
            assert info.value.pid == old and info.value.signal_name == "SIGKILL"
        assert not any(f.done() for f in spared)  # still held at the gate, on the other worker
        gate.open()
        assert {f.result(timeout=10) for f in spared} == {spared[0].worker.pid}
        wait_full_strength(pool, [old])
        assert pool.health().restarts == 1 and pool.stats().retries == 0


def test_an_idempotent_call_is_retried_on_the_other_worker(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=2) as pool:
        plain = pool.submit("wait_for", *gate.held())
        other = pool.submit("wait_for", *gate.held())
        retried = pool.options(idempotent=True).submit("wait_for", *gate.held())
        gate.wait_started(3)
        # Equal loads: the third call joined the first on the first worker.
        victim = plain.worker
        assert retried.worker is victim and other.worker is not victim
        old = victim.pid
        kill(victim)
        with pytest.raises(corral.WorkerCrashed):
            plain.result(timeout=10)
        # The retry runs on the other worker (the victim is restarting, or a new process).
        wait_until(lambda: len(gate.started()) == 4 and retried.attempts == 2,
                   what="the retry to start")
        assert not retried.done()
        gate.open()
        assert retried.result(timeout=10) == other.result(timeout=10) != old
        assert retried.worker is other.worker
        assert pool.stats().retries == 1
        wait_full_strength(pool, [old])


def test_an_idempotent_call_is_retried_only_once(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=1, prefetch=0) as pool:
        fut = pool.options(idempotent=True).submit("wait_for", *gate.held())
        gate.wait_started(1)
        first = fut.worker
        kill(first)
        wait_until(lambda: len(gate.started()) == 2 and fut.attempts == 2,
                   what="the retry to start")
        second = fut.worker
        assert second is not first
        kill(second)
        with pytest.raises(corral.WorkerCrashed):
            fut.result(timeout=10)
        assert fut.attempts == 2 and pool.stats().retries == 1


def test_a_restarting_worker_gets_no_calls(tmp_path):
    policy = corral.Restart(backoff=30.0, max_backoff=30.0)  # "restarting" all along
    with corral.Pool(POOLED, workers=2, restart=policy) as pool:
        victim, spare = pool.workers
        kill(victim)
        wait_until(lambda: victim.state == "restarting", what="the restart to begin")
        pids = {f.result(timeout=10) for f in [pool.submit("pid") for _ in range(20)]}
        assert pids == {spare.pid}
        assert pool.health().status == "degraded" and pool.health().ready == 1


def test_cancel_a_queued_call(tmp_path):
    gate = Gate(tmp_path)
    late = Gate(tmp_path, "late")
    with corral.Pool(POOLED, workers=1, slots=1, prefetch=0) as pool:
        running = pool.submit("wait_for", *gate.held())
        gate.wait_started(1)
        queued = pool.submit("wait_for", *late.held())
        after = pool.submit("echo", "after")
        assert pool.stats().queued == 2
        assert queued.cancel() and queued.cancelled()
        with pytest.raises(corral.Cancelled):
            queued.result(timeout=1)
        assert pool.stats().queued == 1
        gate.open()
        late.open()
        assert after.result(timeout=10) == "after"
        running.result(timeout=10)
        assert late.started() == []  # it never reached the worker
        assert not running.cancel()  # finished: nothing to cancel


def test_sent_callbacks_fire_when_a_queued_call_reaches_a_worker(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=1, slots=1, prefetch=0) as pool:
        running = pool.submit("wait_for", *gate.held())
        gate.wait_started(1)
        assert running.sent
        now = []
        running.add_sent_callback(lambda: now.append("at once"))
        assert now == ["at once"]  # already sent: called on this thread, at once
        queued = pool.submit("echo", "q")
        cancelled = pool.submit("echo", "never")
        sent = threading.Event()
        order = []
        queued.add_sent_callback(lambda: (order.append(queued.done()), sent.set()))
        never = []
        cancelled.add_sent_callback(lambda: never.append(1))
        assert not queued.sent and not sent.is_set()
        assert cancelled.cancel()
        gate.open()
        assert sent.wait(10) and queued.result(timeout=10) == "q"
        assert order == [False]  # sent before it finished
        running.result(timeout=10)
        assert never == []  # cancelled in the queue: never sent


def test_cancel_a_running_call(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=1, slots=1, prefetch=0) as pool:
        fut = pool.submit("wait_for", *gate.held())
        gate.wait_started(1)
        assert fut.cancel()
        with pytest.raises(corral.Cancelled):
            fut.result(timeout=1)
        # The worker stopped the call and takes the next one.
        assert pool.call("echo", 1) == 1
        assert pool.stats().in_flight == 0


def test_timeout_counts_the_time_in_the_queue(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=1, slots=1, prefetch=0) as pool:
        held = pool.submit("wait_for", *gate.held())
        gate.wait_started(1)
        with pytest.raises(corral.CallTimeout, match="pool's queue"):
            pool.options(timeout=0.2).call("echo", 1)
        assert pool.stats().queued == 0
        gate.open()
        held.result(timeout=10)
        # A call that runs too long is stopped by its worker, as with a Worker.
        with pytest.raises(corral.CallTimeout):
            pool.options(timeout=0.2).call("sleep", 30)
        assert pool.call("echo", 2) == 2


def test_map_keeps_the_order(tmp_path):
    with corral.Pool(POOLED, workers=2, slots=2) as pool:
        delays = [0.05, 0.001, 0.03, 0.0, 0.02, 0.001] * 3
        assert list(pool.map("sleep", delays)) == delays
        assert list(pool.starmap("echo", [(i,) for i in range(100)])) == list(range(100))
        # Lazy and bounded, like Worker.map: an abandoned map sends nothing more.
        results = pool.map("echo", range(10_000))
        assert next(results) == 0
        results.close()
        wait_until(lambda: pool.stats().in_flight == 0, what="the map's calls to end")
        assert pool.stats().calls_served < 18 + 100 + 100


def test_a_failed_map_cancels_its_queued_calls(tmp_path):
    gate = Gate(tmp_path)
    closed = str(tmp_path / "never")
    markers = [str(tmp_path / f"item{i}") for i in range(4)]
    with corral.Pool(POOLED, workers=1, slots=2, prefetch=0) as pool:
        other = pool.submit("wait_for", *gate.held())  # holds one of the two slots
        gate.wait_started(1)
        # Item 0 fails at once (timeout 0); the others wait at the gate, or in the queue.
        items = [(closed, markers[0], 0)] + [(str(gate.path), m) for m in markers[1:]]
        with pytest.raises(TimeoutError):
            list(pool.starmap("wait_for", items))
        assert pool.stats().queued == 0
        gate.open()
        other.result(timeout=10)
        wait_until(lambda: pool.stats().in_flight == 0, what="the calls to end")
        assert not os.path.exists(markers[2]) and not os.path.exists(markers[3])


def test_async_calls(tmp_path):
    async def main():
        gate = Gate(tmp_path)
        async with corral.Pool(POOLED, workers=2, slots=2) as pool:
            assert await pool.acall("echo", 1) == 1
            results = await asyncio.gather(*(pool.acall("echo", i) for i in range(30)))
            assert results == list(range(30))
            fut = pool.asubmit("talk", 2)
            assert isinstance(fut, asyncio.Future)
            await fut
            assert fut.logs == ["line 0", "line 1"] and fut.worker is not None
            assert [x async for x in pool.astream("count", 3)] == [0, 1, 2]
            # Cancelling the task that awaits a call cancels the call in its worker.
            task = asyncio.ensure_future(pool.acall("wait_for", *gate.held()))
            await asyncio.to_thread(gate.wait_started, 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(wait_until, lambda: pool.stats().in_flight == 0)
            # The loop never blocked: a slow call and a ticker run side by side.
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.ensure_future(ticker())
            assert await pool.acall("sleep", 0.3) == 0.3
            t.cancel()
            assert ticks >= 5

    asyncio.run(main())


def test_stop_drains_queued_calls(tmp_path):
    gate = Gate(tmp_path)
    pool = corral.Pool(POOLED, workers=2, slots=1, prefetch=0).start()
    running = [pool.submit("wait_for", *gate.held()) for _ in range(2)]
    gate.wait_started(2)
    queued = [pool.submit("echo", i) for i in range(8)]
    assert pool.stats().queued == 8

    def open_once_stopping():
        wait_until(lambda: pool.state == "stopping", what="stop() to begin")
        gate.open()

    opener = threading.Thread(target=open_once_stopping)
    opener.start()
    pool.stop(grace=30)
    opener.join(10)
    assert [f.result(timeout=0) for f in queued] == list(range(8))
    assert all(f.result(timeout=0) in (w.pid for w in pool.workers) for f in running)
    assert pool.state == "stopped" and all(w.state == "stopped" for w in pool.workers)
    with pytest.raises(corral.InvalidState, match="stopped"):
        pool.call("echo", 1)
    pool.stop()  # idempotent


def test_stop_with_a_short_grace_fails_what_is_left(tmp_path):
    gate = Gate(tmp_path)
    pool = corral.Pool(POOLED, workers=2, slots=1, prefetch=0).start()
    running = [pool.submit("wait_for", *gate.held()) for _ in range(2)]
    gate.wait_started(2)
    queued = [pool.submit("echo", i) for i in range(3)]
    pool.stop(grace=0.3)
    for fut in running:
        with pytest.raises(corral.WorkerStopped, match="stopped"):  # not WorkerCrashed
            fut.result(timeout=0)
    for fut in queued:
        with pytest.raises(corral.InvalidState, match="pool was stopped"):
            fut.result(timeout=0)


def test_a_pool_whose_workers_all_failed_is_unavailable(tmp_path):
    gate = Gate(tmp_path)
    with corral.Pool(POOLED, workers=2, slots=1, prefetch=0, restart=False) as pool:
        running = [pool.submit("wait_for", *gate.held()) for _ in range(2)]
        gate.wait_started(2)
        queued = [pool.submit("echo", i) for i in range(3)]
        for w in pool.workers:
            kill(w)
        for fut in running:
            with pytest.raises(corral.WorkerCrashed):
                fut.result(timeout=10)
        for fut in queued:
            with pytest.raises(corral.WorkerUnavailable, match="every worker"):
                fut.result(timeout=10)
        with pytest.raises(corral.WorkerUnavailable) as info:
            pool.call("echo", 1)
        assert len(info.value.history) == 2
        assert pool.state == "failed" and pool.health().status == "failed"


def test_a_worker_that_fails_to_start_stops_the_others():
    with pytest.raises(corral.SetupError, match="cannot load weights"):
        corral.Pool(fixture_ref("broken_setup:BrokenSetup"), workers=3).start()


def test_callbacks_may_submit_but_not_block(tmp_path):
    # max_queue=0: a call made from a callback is handed to the dispatcher, not queued.
    with corral.Pool(POOLED, workers=2, max_queue=0) as pool:
        got = []
        done = threading.Event()

        def callback(fut):
            try:
                pool.call("echo", 1)
            except RuntimeError as exc:
                got.append(exc)
            follow = pool.submit("echo", "follow-up")
            follow.add_done_callback(lambda f: (got.append(f.result()), done.set()))

        gate = Gate(tmp_path)
        held = pool.submit("wait_for", *gate.held())  # so the callback runs on a corral thread
        held.add_done_callback(callback)
        gate.open()
        assert done.wait(10)
        assert isinstance(got[0], RuntimeError) and got[1] == "follow-up"


def test_bad_arguments():
    with pytest.raises(ValueError, match="workers"):
        corral.Pool(POOLED, workers=0)
    with pytest.raises(ValueError, match="max_queue"):
        corral.Pool(POOLED, max_queue=-1)
    with pytest.raises(ValueError, match="slots"):
        corral.Pool(POOLED, slots=0)
    with pytest.raises(corral.InvalidState, match="not started"):
        corral.Pool(POOLED).call("echo", 1)


@pytest.mark.parametrize("runner", ["pool", "worker"])
def test_a_finished_future_leaves_nothing_for_the_garbage_collector(runner):
    """A future lets go of its done callbacks once they ran (a callback that refers to its
    future made a cycle), and a pool's future of its pool call (the two referred to each
    other): a dropped future is freed by reference counting. A server makes thousands a
    second, and cycles pile up for the collector's long pauses (server/gctune.py)."""
    import gc
    import weakref

    make = (lambda: corral.Pool(POOLED, workers=1)) if runner == "pool" else \
        (lambda: corral.Worker(POOLED))
    with make() as r:
        r.call("echo", 0)
        gc.collect()
        gc.disable()
        try:
            refs = []
            for i in range(20):
                fut = r.submit("echo", i)
                fut.add_done_callback(lambda f, fut=fut: None)  # (it refers to the future)
                assert fut.result() == i
                assert (fut.attempts, fut.logs) == (1, [])
                refs.append(weakref.ref(fut))
                del fut
            alive = sum(ref() is not None for ref in refs)
        finally:
            gc.enable()
    assert alive == 0
