"""Pool's own logic (queue, timeouts in the queue, cancels, map, retries), on FakeRunner:
in-process runners, no worker processes. What only processes can show stays in
test_pool.py; this is what the seam makes testable without them."""

from __future__ import annotations

import threading

import pytest

import corral
from conftest import wait_until
from fakes import FakeRunner

DEADLINE = 10.0


class Target:
    """Calls block on a named gate until the test opens it."""

    def __init__(self):
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def wait(self, name: str) -> str:
        assert self.gate(name).wait(DEADLINE), f"gate {name} never opened"
        return name

    def echo(self, x):
        return x

    def boom(self):
        raise ValueError("boom")


def fake_pool(target: Target, **kw) -> corral.Pool:
    kw.setdefault("workers", 1)
    kw.setdefault("prefetch", 0)
    return corral.Pool(target, runner=FakeRunner, **kw).start()


def started(pool: corral.Pool) -> list:
    return [call for w in pool.workers for call in w.started]


def test_a_full_queue_refuses_with_queue_full_and_counts_it():
    t = Target()
    with fake_pool(t, max_queue=2) as pool:
        running = pool.submit("wait", "a")
        queued = [pool.submit("echo", i) for i in range(2)]
        with pytest.raises(corral.QueueFull, match="max_queue=2"):
            pool.submit("echo", 9)
        assert pool.stats().rejected == 1
        t.gate("a").set()
        assert running.result(DEADLINE) == "a"
        assert [f.result(DEADLINE) for f in queued] == [0, 1]


def test_a_call_times_out_in_the_queue_without_reaching_a_worker():
    t = Target()
    with fake_pool(t) as pool:
        running = pool.submit("wait", "a")
        late = pool.options(timeout=0.05).submit("echo", "late")
        with pytest.raises(corral.CallTimeout, match="did not start within"):
            late.result(DEADLINE)
        assert not late.sent and late.attempts == 0
        t.gate("a").set()
        assert running.result(DEADLINE) == "a"
        assert ("echo", ("late",)) not in started(pool)


def test_cancelling_a_queued_call_takes_it_out_and_it_never_runs():
    t = Target()
    with fake_pool(t) as pool:
        running = pool.submit("wait", "a")
        queued = pool.submit("echo", "never")
        assert queued.queued and queued.cancel()
        with pytest.raises(corral.Cancelled):
            queued.result(0)
        t.gate("a").set()
        running.result(DEADLINE)
        assert pool.call("echo", "after") == "after"
        assert ("echo", ("never",)) not in started(pool)


def test_cancelling_a_running_call_cancels_it_in_its_runner():
    t = Target()
    with fake_pool(t) as pool:
        fut = pool.submit("wait", "a")
        wait_until(lambda: fut.sent, DEADLINE, "the call to start")
        assert fut.cancel()
        with pytest.raises(corral.Cancelled):
            fut.result(0)
        assert pool.call("echo", 1) == 1  # its slot is free again
        t.gate("a").set()


def test_map_yields_in_order_across_runners():
    t = Target()
    with fake_pool(t, workers=3, slots=2) as pool:
        assert list(pool.map("echo", range(50))) == list(range(50))


def test_abandoning_a_map_cancels_the_calls_still_queued():
    t = Target()
    with fake_pool(t, max_queue=100) as pool:
        results = pool.starmap("wait", [("a",)] + [(f"q{i}",) for i in range(10)])
        t.gate("a").set()
        assert next(results) == "a"
        results.close()  # the rest were queued: cancelled, never run
        wait_until(lambda: pool.stats().queued == 0, DEADLINE, "the queue to empty")
        names = [args[0] for method, args in started(pool)]
        assert len(names) <= 2, names  # "a" and at most the one that took its slot
        for g in list(t.gates.values()):
            g.set()


def test_a_crash_retries_an_idempotent_call_on_another_runner_and_fails_the_others():
    t = Target()
    with fake_pool(t, workers=3) as pool:  # the third is idle: the retry prefers it
        plain = pool.submit("wait", "p")
        retried = pool.options(idempotent=True).submit("wait", "r")
        wait_until(lambda: plain.sent and retried.sent, DEADLINE, "both to start")
        crashed = retried.worker
        crashed.crash()
        other = plain.worker
        if other is crashed:
            pytest.fail("both calls were on one runner with slots=1")
        t.gate("r").set()
        assert retried.result(DEADLINE) == "r"
        assert retried.attempts == 2 and retried.worker is not crashed
        assert pool.stats().retries == 1
        t.gate("p").set()
        assert plain.result(DEADLINE) == "p"


def test_a_call_that_never_reached_a_crashed_runner_is_sent_again_idempotent_or_not():
    t = Target()
    with fake_pool(t, workers=1, prefetch=1) as pool:
        first = pool.submit("wait", "a")
        second = pool.submit("echo", "b")  # prefetched: held by the runner, not running
        wait_until(lambda: second.attempts == 1, DEADLINE, "the second call to be handed")
        pool.workers[0].crash()
        with pytest.raises(corral.WorkerCrashed):
            first.result(DEADLINE)
        assert second.result(DEADLINE) == "b"
        assert pool.stats().requeued == 1


def test_a_pool_whose_runners_all_failed_fails_its_queue_with_worker_unavailable():
    t = Target()
    with fake_pool(t, workers=2) as pool:
        running = [pool.submit("wait", "a"), pool.submit("wait", "b")]
        wait_until(lambda: all(f.sent for f in running), DEADLINE, "both to start")
        queued = pool.submit("echo", 1)
        for w in pool.workers:
            w.kill()
        with pytest.raises(corral.WorkerUnavailable, match="every worker"):
            queued.result(DEADLINE)
        with pytest.raises(corral.WorkerUnavailable):
            pool.submit("echo", 2)


def test_user_errors_and_stops_are_never_retried():
    t = Target()
    pool = fake_pool(t)
    with pytest.raises(ValueError):
        pool.options(idempotent=True).call("boom")
    fut = pool.options(idempotent=True).submit("wait", "a")
    wait_until(lambda: fut.sent, DEADLINE, "the call to start")
    pool.stop(grace=0.05)
    with pytest.raises(corral.WorkerStopped):
        fut.result(DEADLINE)
    assert pool.stats().retries == 0
    t.gate("a").set()
