"""Nothing is left behind after a stop or a crash: no process (grandchildren included), no
socket or other descriptor in the host, nothing in /dev/shm, no temp file."""

import os
import signal

import psutil
import pytest

import corral
from conftest import fixture_ref, open_fds, wait_until

SPAWNER = fixture_ref("supervised:Spawner")
CRASHY = fixture_ref("supervised:Crashy")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("ending", ["stop", "crash", "sigkill"])
def test_a_grandchild_dies_with_its_worker(ending):
    w = corral.Worker(SPAWNER, restart=False).start()
    try:
        grandchild = w.call("spawn")
        assert not gone(grandchild)
        if ending == "crash":
            with pytest.raises(corral.WorkerCrashed):
                w.call("exit_now", 1)
        elif ending == "sigkill":
            os.kill(w.pid, signal.SIGKILL)
            wait_until(lambda: w.state == "failed", what="the host to see the crash")
        wait_until(lambda: gone(grandchild) or ending == "stop", what="the grandchild to die")
    finally:
        w.stop()
    wait_until(lambda: gone(grandchild), what="the grandchild to die")


def test_no_descriptor_or_file_is_left_after_starts_crashes_restarts_and_stops(tmp_path):
    # Warm up what is created once per host process (the timer thread, imports).
    with corral.Worker(CRASHY, timeout=5) as w:
        w.call("echo", 1)
    fds = open_fds()
    tmp = tmp_path / "tmp"  # the workers' temp dir: must stay empty
    tmp.mkdir()
    shm = {n for n in os.listdir("/dev/shm") if "corral" in n}
    for _ in range(3):
        with corral.Worker(CRASHY, restart=corral.Restart(backoff=0.0), timeout=5,
                           env={"TMPDIR": str(tmp)}) as w:
            assert w.call("echo", 1) == 1
            with pytest.raises(corral.WorkerCrashed):
                w.call("exit_now", 1)  # crash, restart
            assert w.call("echo", 2) == 2
            fut = w.submit("sleep", 30)
            wait_until(lambda: w.health().busy == 1, what="the call to run")
            fut.cancel()
            assert w.call("echo", 3) == 3
        pids = [c.pid for c in w.crashes]
        assert all(gone(p) for p in pids)
    assert open_fds() == fds
    assert list(tmp.iterdir()) == []
    assert {n for n in os.listdir("/dev/shm") if "corral" in n} == shm


def test_a_forked_child_leaves_its_parents_worker_alone():
    from corral.host.worker import _stop_live_workers

    with corral.Worker(CRASHY) as w:
        pid = w.pid
        child = os.fork()
        if child == 0:  # the child: what its exit would do, then an explicit stop()
            try:
                _stop_live_workers()
                w.stop(grace=0)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert w.call("pid") == pid
        assert w.health().status == "ready"
