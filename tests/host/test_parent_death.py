"""A busy worker ends within 1 s of its host, however the host ends.

The host ends by ``sys.exit`` (no cleanup of its own: atexit stops the worker), by
``os._exit`` and by SIGKILL, while its worker is in a call: spinning in pure Python on its
main thread, or asleep in ``time.sleep``. Several mechanisms end an orphaned worker at
once: its keeper (corral/worker/keeper.py) SIGKILLs it when the keeper's own
PR_SET_PDEATHSIG fires or its socket to the host ends; the worker's PR_SET_PDEATHSIG fires
when the keeper ends; and the worker exits at the end of its control socket.
Each case measures from the moment the host's exit status is known to the moment the
worker is gone, and checks that nothing is left behind.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import corral
from conftest import fixture_ref, wait_until

HOST = textwrap.dedent("""
    import os, sys, threading, time
    import corral

    ref, method, where, side, fork = sys.argv[1:6]
    extra = [float(a) for a in sys.argv[6:]]
    if where == "main":
        w = corral.Worker(ref).start()
    else:                               # from a thread that ends: no PR_SET_PDEATHSIG
        box = []
        t = threading.Thread(target=lambda: box.append(corral.Worker(ref).start()))
        t.start()
        t.join()
        w = box[0]
    child = 0
    if fork == "fork":                  # a child that outlives us, as multiprocessing's
        child = os.fork()               # 'fork' start method makes: it inherits our fds
        if child == 0:
            time.sleep(60)
            os._exit(0)
    w.submit(method, side, *extra)
    print(w.pid, child, flush=True)
    how = sys.stdin.readline().strip()  # the test says how to end, once the call runs
    if how == "os._exit":
        os._exit(0)
    elif how == "sys.exit":
        sys.exit(0)
    sys.stdin.readline()                # "SIGKILL": the test kills us
""")

#: What a worker may hold: nothing that lives on after its last descriptor is closed.
ANONYMOUS = ("pipe:", "socket:", "anon_inode:", "/memfd:", "/dev/null")


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for whoever inherited it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def workers_of(host_pid: int) -> list[int]:
    """Live worker processes started by ``host_pid`` (its pid is on their command line; the
    worker's keeper, forked from it, has the same until it execs, but its own name)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status", "name"]):
        cmd = p.info["cmdline"] or []
        if "corral.worker" in cmd and "--parent-pid" in cmd \
                and cmd[cmd.index("--parent-pid") + 1] == str(host_pid) \
                and p.info["status"] != psutil.STATUS_ZOMBIE \
                and p.info["name"] != "corral-keeper":
            found.append(p.pid)
    return found


def shm_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "corral" in n} if os.path.isdir("/dev/shm") \
        else set()


class Host:
    """A host script in a subprocess whose worker is busy in ``method``."""

    def __init__(self, tmp_path, method, where, *extra, fork=False):
        script = tmp_path / "host.py"
        script.write_text(HOST)
        self.side = tmp_path / "side"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), fixture_ref("slow:Slow"), method, where,
             str(self.side), "fork" if fork else "-", *map(str, extra)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        pid, child = self.proc.stdout.readline().split()
        self.worker, self.child = int(pid), int(child)
        wait_until(lambda: self.side.exists() and "started" in self.side.read_text(),
                   what="the call to start")

    def end(self, how: str) -> int:
        """End the host ``how``; return its exit status as soon as it is known."""
        if how == "SIGKILL":
            self.proc.kill()
        else:
            self.proc.stdin.write(how + "\n")
            self.proc.stdin.flush()
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def outlived_by(host: Host, how: str, timeout: float = 5.0) -> float:
    """End ``host``; seconds from its end to its worker's."""
    host.end(how)
    ended = time.monotonic()
    wait_until(lambda: gone(host.worker), timeout=timeout,
               what=f"worker {host.worker} to end after its host ({how})")
    return time.monotonic() - ended


@pytest.mark.parametrize("where", ["main", "thread"])
@pytest.mark.parametrize("busy", ["spin", "sleep"])
@pytest.mark.parametrize("how", ["sys.exit", "os._exit", "SIGKILL"])
def test_a_busy_worker_ends_within_1s_of_its_host(tmp_path, how, busy, where):
    shm_before = shm_names()
    host = Host(tmp_path, busy, where)
    try:
        pid = host.worker
        assert workers_of(host.proc.pid) == [pid]
        # It holds no file that could outlive it, and has no process of its own.
        fds = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        assert [f for f in fds if not f.startswith(ANONYMOUS)] == []
        assert psutil.Process(pid).children() == []
        took = outlived_by(host, how)
    finally:
        host.close()
    assert host.proc.returncode == (-signal.SIGKILL if how == "SIGKILL" else 0)
    assert took <= 1.0, f"worker {pid} outlived its host by {took:.3f}s"
    assert "finished" not in host.side.read_text()  # it was busy to the end
    assert workers_of(host.proc.pid) == []
    assert shm_names() - shm_before == set()


# Every worker asks the kernel to end it with its host, however it was started: workers are
# forked by one long-lived host thread (host/process.py, _Spawner), because Linux ties
# PR_SET_PDEATHSIG to the forking thread. That also covers a worker whose control thread
# cannot act on the end of its control socket (a C call holding the GIL).


def asks_to_die_with_its_host(pid: int) -> bool:
    return "--die-with-parent" in psutil.Process(pid).cmdline()


@pytest.mark.parametrize("how", [
    "started on the main thread",
    "started on a thread",
    "recycled",
    "restarted after a crash",
])
def test_every_worker_asks_the_kernel_to_end_it_with_its_host(how):
    slow = fixture_ref("slow:Slow")
    if how == "started on a thread":
        box = []
        t = threading.Thread(target=lambda: box.append(corral.Worker(slow).start()))
        t.start()
        t.join()
        w = box[0]
    else:
        w = corral.Worker(slow, max_calls=1 if how == "recycled" else None).start()
    with w:
        first = w.pid
        if how == "recycled":
            w.call("sleep", os.devnull, 0)
        elif how == "restarted after a crash":
            with pytest.raises(corral.WorkerCrashed):
                w.call("die")
        if how in ("recycled", "restarted after a crash"):
            wait_until(lambda: w.pid != first and w.state == "ready",
                       what=f"the worker to be {how}")
        assert asks_to_die_with_its_host(w.pid)


def test_a_worker_in_a_c_call_holding_the_gil_ends_within_1s(tmp_path):
    host = Host(tmp_path, "hold_gil", "thread", 2.5)
    try:
        took = outlived_by(host, "os._exit")
    finally:
        host.close()
    assert took <= 1.0, f"worker {host.worker} outlived its host by {took:.3f}s"


def test_a_worker_ends_within_1s_of_a_host_whose_forked_child_lives_on(tmp_path):
    host = Host(tmp_path, "sleep", "thread", fork=True)
    try:
        took = outlived_by(host, "os._exit", timeout=2.0)
    finally:
        host.close()
        try:
            psutil.Process(host.child).kill()  # then the socket ends, and the worker
        except psutil.NoSuchProcess:
            pass
        wait_until(lambda: gone(host.worker), what=f"worker {host.worker} to end")
    assert took <= 1.0, f"worker {host.worker} outlived its host by {took:.3f}s"
