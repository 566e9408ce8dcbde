"""Crashes are recovered: calls in flight fail with WorkerCrashed, the worker restarts
(setup runs again) with backoff, later calls succeed; too many crashes give
WorkerUnavailable with the history. Recycling replaces a worker without failing calls."""

import os
import signal
import threading

import pytest

import corral
from conftest import fixture_ref, wait_until

CRASHY = fixture_ref("supervised:Crashy")


def setups(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("setup")]


def crash_by(w, how):
    """Make ``w``'s process die ``how``; return the in-flight call's future."""
    if how == "sigkill":
        fut = w.submit("sleep", 30)
        wait_until(lambda: w.health().busy == 1, what="the call to start")
        os.kill(w.pid, signal.SIGKILL)
        return fut
    if how == "exit":
        return w.submit("exit_now", 7)
    if how == "segfault":
        return w.submit("segfault")
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_a_crash_fails_the_call_then_the_worker_restarts(tmp_path, how):
    log = tmp_path / "setups"
    with corral.Worker(CRASHY, config={"log": str(log)}) as w:
        first = w.pid
        fut = crash_by(w, how)
        with pytest.raises(corral.WorkerCrashed) as info:
            fut.result(timeout=10)
        err = info.value
        assert err.pid == first
        if how == "sigkill":
            assert (err.exitcode, err.signal_name) == (-9, "SIGKILL")
        elif how == "exit":
            assert err.exitcode == 7 and "exit code 7" in str(err)
        else:
            assert err.signal_name == "SIGSEGV"
            assert "Segmentation fault" in err.stderr  # faulthandler's last words
        # The next call waits for the restart and succeeds in a new process.
        assert w.call("pid") != first
        assert len(setups(log)) == 2
        assert w.health().status == "ready" and w.health().restarts == 1
        assert [c.pid for c in w.crashes] == [first]


def test_health_says_restarting_during_the_backoff(tmp_path):
    policy = corral.Restart(backoff=0.5)
    with corral.Worker(CRASHY, restart=policy) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 1)
        health = w.health()
        assert health.status == "restarting", health
        assert "exit code 1" in health.detail
        # A call made meanwhile waits for the new process instead of failing.
        fut = w.submit("echo", "after")
        assert fut.result(timeout=30) == "after"
        assert w.health().status == "ready"


def test_calls_made_during_a_restart_wait_for_it_in_order(tmp_path):
    with corral.Worker(CRASHY, restart=corral.Restart(backoff=0.3)) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 1)
        assert w.state == "restarting"
        futs = [w.submit("echo", i) for i in range(20)]
        blocking = w.call("echo", "blocking")
        assert [f.result(timeout=30) for f in futs] == list(range(20))
        assert blocking == "blocking"
        assert list(w.map("echo", range(5))) == list(range(5))


def test_an_idle_worker_that_dies_is_restarted_without_a_call(tmp_path):
    log = tmp_path / "setups"
    with corral.Worker(CRASHY, config={"log": str(log)}) as w:
        first = w.pid
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(setups(log)) == 2, what="the restart's setup")
        wait_until(lambda: w.state == "ready", what="the worker to be ready again")
        assert w.pid != first and w.call("echo", 1) == 1


def test_too_many_crashes_make_the_worker_unavailable(tmp_path):
    policy = corral.Restart(max_restarts=2, window=60, backoff=0.01)
    with corral.Worker(CRASHY, restart=policy) as w:
        pids = []
        for _ in range(3):
            pids.append(w.call("pid"))
            with pytest.raises(corral.WorkerCrashed):
                w.call("exit_now", 3)
        with pytest.raises(corral.WorkerUnavailable) as info:
            w.call("echo", 1)
        err = info.value
        assert isinstance(err, corral.InvalidState)  # a worker that takes no calls
        assert [c.pid for c in err.history] == pids
        assert all(c.exitcode == 3 for c in err.history)
        assert "crashed too often" in str(err) and "exit code 3" in str(err)
        health = w.health()
        assert health.status == "failed" and "crashed too often" in health.detail


def test_restart_false_gives_up_at_the_first_crash():
    with corral.Worker(CRASHY, restart=False) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 3)
        assert w.health().status == "failed"
        with pytest.raises(corral.WorkerUnavailable):
            w.call("echo", 1)


def test_a_restart_whose_setup_fails_is_retried_then_given_up(tmp_path):
    log = tmp_path / "setups"
    policy = corral.Restart(max_restarts=3, backoff=0.01)
    with corral.Worker(CRASHY, config={"log": str(log), "fail_after": 1}, restart=policy) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 3)
        with pytest.raises(corral.WorkerUnavailable) as info:
            w.call("echo", 1)
        reasons = [c.reason for c in info.value.history]
        assert "exit code 3" in reasons[0]
        assert all("restart failed" in r and "refuses" in r for r in reasons[1:]), reasons
        assert len(reasons) == 4


def test_stop_during_a_restart_ends_everything(tmp_path):
    w = corral.Worker(CRASHY, restart=corral.Restart(backoff=5.0)).start()
    with pytest.raises(corral.WorkerCrashed):
        w.call("exit_now", 1)
    fut = w.submit("echo", 1)  # waits for a restart that will not come
    w.stop()
    with pytest.raises(corral.InvalidState, match="stopped"):
        fut.result(timeout=10)
    assert w.state == "stopped"


def test_other_calls_in_flight_fail_with_the_crash_too():
    with corral.Worker(CRASHY, slots=4) as w:
        sleepers = [w.submit("sleep", 30) for _ in range(3)]
        wait_until(lambda: w.health().busy == 3, what="three calls to run")
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 9)
        for fut in sleepers:
            with pytest.raises(corral.WorkerCrashed, match="exit code 9"):
                fut.result(timeout=10)
        assert w.call("echo", "again") == "again"


# -- recycling -----------------------------------------------------------------------------

def test_max_calls_replaces_the_worker_without_failing_a_call(tmp_path):
    log = tmp_path / "setups"
    with corral.Worker(CRASHY, config={"log": str(log)}, max_calls=5) as w:
        pids = [w.call("pid") for _ in range(12)]
        futs = [w.submit("pid") for _ in range(12)]
        pids += [f.result(timeout=30) for f in futs]
        assert len(pids) == 24
        # Every process served at most 5 calls, in one run of consecutive calls.
        runs = [pids[0]]
        for p in pids[1:]:
            if p != runs[-1]:
                runs.append(p)
        assert len(set(runs)) == len(runs) >= 5
        assert all(pids.count(p) <= 5 for p in runs)
        assert w.stats().recycles == len(runs) - 1 or w.state == "restarting"
        assert w.health().restarts == 0  # recycling is not crashing


def test_max_rss_replaces_a_worker_that_grew(tmp_path):
    with corral.Worker(CRASHY, max_rss=150 << 20) as w:
        first = w.call("grow", 200)
        wait_until(lambda: w.call("pid") != first, timeout=30, what="the worker to be recycled")
        assert w.stats().recycles == 1 and w.health().restarts == 0


def test_threads_calling_through_repeated_crashes_get_results_or_typed_errors():
    results: list = []
    lock = threading.Lock()
    with corral.Worker(CRASHY, slots=2, restart=corral.Restart(max_restarts=100)) as w:
        def caller(n):
            for i in range(30):
                try:
                    out = ("ok", w.call("echo", (n, i)) == (n, i))
                except corral.WorkerCrashed:
                    out = ("crashed", True)
                with lock:
                    results.append(out)

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for _ in range(3):
            wait_until(lambda: w.state == "ready", what="ready")
            try:
                w.call("exit_now", 1)
            except corral.WorkerCrashed:
                pass
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert len(results) == 120 and all(ok for _, ok in results)
    assert sum(1 for kind, _ in results if kind == "ok") > 0


def test_a_value_that_cannot_be_sent_raises_at_submit_during_a_restart_too():
    with corral.Worker(CRASHY, restart=corral.Restart(backoff=0.3)) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 1)
        assert w.state == "restarting"
        with pytest.raises(TypeError, match="lock"):
            w.submit("echo", threading.Lock())
        assert w.call("echo", 1) == 1


def test_done_callbacks_of_calls_that_waited_for_a_restart_may_call_again():
    with corral.Worker(CRASHY, restart=corral.Restart(backoff=0.3)) as w:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 1)
        follow_ups = []
        done = threading.Event()

        def follow_up(fut):
            follow_ups.append(w.submit("echo", fut.result() + 1))
            done.set()

        w.submit("echo", 1).add_done_callback(follow_up)
        assert done.wait(30)
        assert follow_ups[0].result(timeout=30) == 2


def test_a_policy_beyond_the_kept_history_still_gives_up():
    # (the history shown keeps the last 20 crashes; the window must count them all)
    from corral.host.supervisor import CrashHistory

    history = CrashHistory(corral.Restart(max_restarts=30, window=60, backoff=0.01))
    decisions = [history.record(corral.Crash(1000.0 + i, i, 1, None, "died"))
                 for i in range(31)]
    assert all(d is not None for d in decisions[:30]) and decisions[30] is None
    assert len(history.crashes) == 20
    # Crashes that left the window no longer count.
    assert history.record(corral.Crash(2000.0, 99, 1, None, "died")) is not None
