"""Health, stats, reload, state, stop, and a worker that dies."""

import os
import threading

import psutil
import pytest

import corral
from conftest import fixture_ref, wait_until


def test_health_reports_each_state(tmp_path):
    w = corral.Worker(fixture_ref("basic:Basic"))
    assert w.health().status == "new"
    w.start()
    health = w.health()
    assert (health.status, health.pid, health.busy, health.slots) == ("ready", w.pid, 0, 1)
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    fut = w.submit("wait_fifo", fifo)
    # The worker answers pings while its only slot is busy: it says so.
    wait_until(lambda: w.health().busy == 1, what="the call to start")
    assert w.health().status == "busy"
    with open(fifo, "w") as f:
        f.write("done")
    assert fut.result(timeout=10) == "done"
    assert w.health().status == "ready"
    w.stop()
    assert w.health().status == "stopped"


def test_stats(basic):
    for i in range(5):
        basic.call("add", i)
    stats = basic.stats()
    assert stats.pid == basic.pid
    assert stats.calls_served == 5
    assert stats.busy == 0 and stats.queued == 0 and stats.slots == 1
    assert 5_000_000 < stats.rss < 200_000_000
    assert stats.uptime > 0


def test_reload_rebuilds_the_target_with_new_config(basic):
    pid = basic.pid
    basic.call("bump")
    assert basic.call("config_seen") == "hello"
    basic.reload({"greeting": "bonjour"})
    assert basic.pid == pid  # same process
    assert basic.call("config_seen") == "bonjour"
    assert basic.call("bump") == 1  # a new instance: setup ran again
    assert "setting up with bonjour" in basic.setup_logs


def test_reload_waits_for_calls_in_flight(basic, tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    fut = basic.submit("wait_fifo", fifo)
    reloaded = threading.Event()

    def reload():
        basic.reload({"greeting": "hey"})
        reloaded.set()

    t = threading.Thread(target=reload)
    t.start()
    assert not reloaded.wait(0.2)  # blocked behind the call in flight
    with open(fifo, "w") as f:
        f.write("x")
    assert fut.result(timeout=10) == "x"
    t.join(10)
    assert reloaded.is_set()
    assert basic.call("greet", "bo") == "hey, bo"


def test_failed_reload_raises_setup_error_and_fails_the_worker(basic):
    with pytest.raises(corral.SetupError, match="setup was told to fail"):
        basic.reload({"fail_setup": True})
    assert basic.health().status == "failed"
    with pytest.raises(corral.InvalidState, match="failed"):
        basic.call("add", 1)


def test_get_state_and_set_state(basic):
    basic.call("bump")
    assert basic.get_state() == {"n": 1}
    basic.set_state({"n": 41})
    assert basic.call("bump") == 42


def test_get_state_on_a_target_without_it():
    def f():
        return 1

    with corral.Worker(f) as w:
        with pytest.raises(corral.MethodNotFound, match="get_state"):
            w.get_state()


def test_stop_ends_the_process_and_is_idempotent():
    w = corral.Worker(fixture_ref("basic:Basic")).start()
    proc = psutil.Process(w.pid)
    w.stop()
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    w.stop()
    assert w.state == "stopped"


def test_stop_drains_calls_in_flight(basic):
    fut = basic.submit("sleep", 0.3)
    basic.stop(grace=10)
    assert fut.result(timeout=1) == 0.3


def test_stop_past_grace_fails_the_calls_left(basic, tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    fut = basic.submit("wait_fifo", fifo)
    basic.stop(grace=0.2)
    # Stopped is not crashed (issue 13): your own stop() cut the call off.
    with pytest.raises(corral.WorkerStopped, match="stopped before the call finished"):
        fut.result(timeout=10)


def test_a_worker_that_dies_fails_its_call_with_the_exit_code():
    # restart=False: the failure is final (restarts: tests/host/test_supervision.py)
    with corral.Worker(fixture_ref("basic:Basic"), restart=False) as w:
        with pytest.raises(corral.WorkerCrashed) as info:
            w.call("exit_now", 3)
        assert info.value.exitcode == 3
        assert "exit code 3" in str(info.value)
        assert w.health().status == "failed"
        with pytest.raises(corral.WorkerUnavailable) as again:
            w.call("add", 1)
        assert isinstance(again.value, corral.InvalidState)
        assert [c.exitcode for c in again.value.history] == [3]


def test_killed_worker_names_the_signal(basic):
    fut = basic.submit("sleep", 30)
    os.kill(basic.pid, 9)
    with pytest.raises(corral.WorkerCrashed) as info:
        fut.result(timeout=10)
    assert info.value.signal_name == "SIGKILL" and info.value.exitcode == -9


def test_an_idle_worker_that_dies_is_seen_without_a_call():
    with corral.Worker(fixture_ref("basic:Basic"), restart=False) as w:
        os.kill(w.pid, 9)  # (psutil's wait() would reap it and steal the exit status)
        # The host notices on its own (end of the control channel), not at the next call.
        wait_until(lambda: w.state != "ready", what="the host to notice")
        assert w.health().status == "failed"
        assert "SIGKILL" in w.health().detail
