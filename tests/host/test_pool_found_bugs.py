"""Worker bugs found while building the Pool, each as a minimal failing test (not fixed
here: the Worker's files belong to another branch of work). Marked xfail(strict=True), so
the fix makes them fail loudly and they can be turned into plain tests."""

import threading

import pytest

import corral
from conftest import fixture_ref, wait_until

CRASHY = fixture_ref("supervised:Crashy")


@pytest.mark.xfail(strict=True, reason=(
    "Worker: a call made during a restart is encoded only when the restart flushes it "
    "(_Deferred.flush -> _send_deferred). If that fails (an argument that cannot be sent), "
    "its future fails while the restart thread holds the worker's _gate, _lifecycle and the "
    "deferral lock, so a done callback that submits to the same worker deadlocks the restart "
    "thread, and with it every later call and stop(). (A call made while the worker is ready "
    "raises the TypeError from submit() instead.)"))
def test_done_callback_of_a_deferred_call_that_fails_may_submit():
    import corral.host.worker as worker_module

    w = corral.Worker(CRASHY, restart=corral.Restart(backoff=0.2)).start()
    submitted = threading.Event()
    outcome: list = []

    def follow_up(fut):
        outcome.append(fut.exception())
        w.submit("echo", "follow-up")  # deadlocks here, on the restart thread
        submitted.set()

    try:
        with pytest.raises(corral.WorkerCrashed):
            w.call("exit_now", 1)
        assert w.state == "restarting"
        bad = w.submit("echo", threading.Lock())  # deferred: not encoded yet
        bad.add_done_callback(follow_up)
        wait_until(lambda: outcome, what="the deferred call to fail")
        assert isinstance(outcome[0], TypeError)
        assert submitted.wait(5), "the done callback's submit() never returned"
    finally:
        if submitted.is_set():
            w.stop()
        else:
            # The restart thread is stuck holding the worker's locks: stop() would hang too.
            # Kill the process by hand and keep atexit from calling stop().
            worker_module._live_workers.discard(w)
            if w._proc is not None:
                w._proc.kill()
                w._proc.wait(5)
