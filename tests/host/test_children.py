"""What a model starts dies with its worker, however it was started and however the worker
ends: every kind of child of tests/fixtures/children.py (same group, plain fork, double fork,
new session and its child, daemon) after ``stop()``, a crash and its restart, a SIGKILL of the
worker, a recycle, and a SIGKILL of the host process (alone, or with its process group).
The keeper that does it (corral/worker/keeper.py) is gone too. The keeper starts as a fork
of the worker's interpreter and execs a bare one after SLIM_AFTER_S: the main endings are
tested in both stages."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import corral
from conftest import fixture_ref, wait_until

PARENT = fixture_ref("children:Parent")
STAGES = ["forked", "exec'd"]
KINDS = {"same group", "plain fork", "double fork", "daemon", "new session",
         "new session's child"}

HOST = textwrap.dedent("""
    import json, sys, time
    import corral, psutil

    w = corral.Worker(sys.argv[1]).start()
    pids = w.call("spawn")
    pids["worker"] = w.pid
    pids["keeper"] = keeper = psutil.Process(w.pid).ppid()
    if sys.argv[2] == "exec'd":
        deadline = time.monotonic() + 10
        while "keeper.py" not in " ".join(psutil.Process(keeper).cmdline()):
            assert time.monotonic() < deadline, "the keeper did not exec"
            time.sleep(0.01)
    print(json.dumps(pids), flush=True)
    sys.stdin.readline()  # the test kills us
""")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def left(pids: dict[str, int]) -> dict[str, int]:
    return {kind: pid for kind, pid in pids.items() if not gone(pid)}


def wait_all_gone(pids: dict[str, int], after: str) -> None:
    try:
        wait_until(lambda: not left(pids), what=f"every process to end after {after}")
    except AssertionError:
        raise AssertionError(f"left after {after}: {left(pids)}") from None


def execd(keeper: int) -> bool:
    return "keeper.py" in " ".join(psutil.Process(keeper).cmdline())


def spawn(w: corral.Worker, stage: str = "forked") -> dict[str, int]:
    """Every kind of child, and the worker's keeper, all running; the keeper in ``stage``."""
    pids = w.call("spawn")
    assert set(pids) == KINDS
    keeper = psutil.Process(w.pid).ppid()
    assert keeper != os.getpid(), "the worker does not run under a keeper"
    pids["keeper"] = keeper
    if stage == "exec'd":
        wait_until(lambda: execd(keeper), what="the keeper to exec")
    assert left(pids) == pids
    # Each one where the kind says: not the worker's children any more, not in its group.
    worker_group = os.getpgid(w.pid)
    assert os.getpgid(pids["same group"]) == worker_group
    for kind in ("new session", "new session's child", "daemon"):
        assert os.getsid(pids[kind]) != os.getsid(w.pid), kind
    for kind in ("double fork", "daemon"):
        assert psutil.Process(pids[kind]).ppid() == keeper, kind
    return pids


@pytest.mark.parametrize("stage", STAGES)
def test_nothing_is_left_once_stop_returns(stage):
    w = corral.Worker(PARENT, restart=False).start()
    try:
        pids = spawn(w, stage)
    finally:
        w.stop()
    assert left(pids) == {}  # stop() returns once the keeper has reaped them all


@pytest.mark.parametrize("how, stage", [("os._exit", "forked"), ("SIGKILL", "forked"),
                                        ("SIGKILL", "exec'd"), ("killpg(0)", "forked")])
def test_nothing_is_left_after_the_worker_dies_and_is_restarted(how, stage):
    with corral.Worker(PARENT, restart=corral.Restart(backoff=0.0)) as w:
        first = w.pid
        pids = spawn(w, stage)
        if how == "os._exit":
            with pytest.raises(corral.WorkerCrashed):
                w.call("exit_now", 3)
        elif how == "killpg(0)":  # the model kills its own group: the keeper is not in it
            with pytest.raises(corral.WorkerCrashed):
                w.call("kill_my_group")
        else:
            os.kill(w.pid, signal.SIGKILL)
        wait_all_gone(pids, f"the worker's {how}")
        wait_until(lambda: w.state == "ready" and w.pid != first, what="the restart")
        assert w.call("pid") == w.pid
        assert w.crashes[-1].exitcode == (3 if how == "os._exit" else -signal.SIGKILL)
        again = spawn(w)
    assert left(again) == {}


def test_nothing_is_left_after_a_recycle():
    # max_calls=2: spawn() checks the old process while it is sure to live; the second
    # call is its last, and the recycle begins as it ends.
    with corral.Worker(PARENT, max_calls=2) as w:
        first = w.pid
        pids = spawn(w)
        assert w.call("pid") == first
        wait_until(lambda: w.state == "ready" and w.pid != first, what="the recycle")
        assert left(pids) == {}  # the old process is reaped before the new one starts


def test_nothing_is_left_after_stop_has_to_sigkill_the_worker(tmp_path):
    # The worker ignores SIGTERM and cannot act on the shutdown: stop() ends with SIGKILL.
    w = corral.Worker(PARENT, restart=False).start()
    path = tmp_path / "pids"
    try:
        keeper = psutil.Process(w.pid).ppid()
        fut = w.submit("stubborn", str(path))
        wait_until(path.exists, what="the children to start")
        pids = json.loads(path.read_text())
        assert left(pids) == pids
    finally:
        w.stop(grace=0.1)
    assert left({**pids, "keeper": keeper}) == {}
    with pytest.raises(corral.WorkerStopped):  # our own stop(), not a crash
        fut.result(5)


@pytest.mark.parametrize("how, stage", [("the host alone", "forked"),
                                        ("the host alone", "exec'd"),
                                        ("the host's process group", "forked")])
def test_nothing_is_left_after_the_host_is_sigkilled(tmp_path, how, stage):
    script = tmp_path / "host.py"
    script.write_text(HOST)
    host = subprocess.Popen([sys.executable, str(script), PARENT, stage], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pids = json.loads(host.stdout.readline())
        assert set(pids) == KINDS | {"worker", "keeper"}
        assert left(pids) == pids
        if how == "the host alone":
            host.kill()
        else:  # the keeper is in a session of its own: a group kill does not reach it
            os.killpg(host.pid, signal.SIGKILL)
        assert host.wait(30) == -signal.SIGKILL
        wait_all_gone(pids, f"a SIGKILL of {how}")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        host.stdin.close()
        host.stdout.close()


@pytest.mark.parametrize("stage", STAGES)
def test_the_keeper_holds_nothing_but_its_socket(stage):
    def holds() -> list[str]:
        found = []
        for n in os.listdir(f"/proc/{keeper.pid}/fd"):
            try:
                found.append(os.readlink(f"/proc/{keeper.pid}/fd/{n}").split(":")[0])
            except FileNotFoundError:
                pass  # (a file the interpreter read as it started)
        return sorted(found)

    # stdin, stdout (/dev/null), stderr (the host's pipe), its socket to the host, and the
    # self-pipe its signal handlers wake it through.
    expected = ["/dev/null", "/dev/null", "pipe", "pipe", "pipe", "socket"]
    with corral.Worker(PARENT) as w:
        keeper = psutil.Process(psutil.Process(w.pid).ppid())
        if stage == "exec'd":  # (and done starting over: the fds come as it does)
            wait_until(lambda: execd(keeper.pid) and holds() == expected,
                       what="the keeper to exec")
        assert holds() == expected
        assert keeper.children() == [psutil.Process(w.pid)]


def test_a_sigkilled_keeper_takes_its_worker_along():
    # The limit of the design: what the worker detached survives a SIGKILL of the keeper
    # itself; the worker does not (PR_SET_PDEATHSIG), and is restarted as after a crash.
    with corral.Worker(PARENT, restart=corral.Restart(backoff=0.0)) as w:
        first = w.pid
        os.kill(psutil.Process(first).ppid(), signal.SIGKILL)
        wait_until(lambda: gone(first), what="the worker to end with its keeper")
        wait_until(lambda: w.state == "ready" and w.pid != first, what="the restart")
        assert w.call("pid") == w.pid
        assert w.crashes[-1].signal_name == "SIGKILL"


def test_without_a_keeper_what_shares_the_workers_group_still_dies(monkeypatch):
    # Elsewhere than Linux (and for the benchmark's baseline) there is no keeper: the worker
    # is the host's child, and only its process group is killed with it.
    from corral.host import process

    monkeypatch.setattr(process, "KEEPER", False)
    w = corral.Worker(PARENT, restart=False).start()
    try:
        assert psutil.Process(w.pid).ppid() == os.getpid()
        pids = w.call("spawn")
    finally:
        w.stop()
    assert gone(pids["same group"]) and gone(pids["plain fork"])
    for pid in left(pids).values():  # the rest escaped, as they would have before
        psutil.Process(pid).kill()


def test_a_host_with_more_than_1024_descriptors_gets_a_keeper_too():
    # The keeper's socket keeps its number from the host: select() could not wait on it.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1100
    if hard != resource.RLIM_INFINITY and hard < want + 64:
        pytest.skip(f"the hard limit on open files ({hard}) is below {want + 64}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want + 64), hard))
    held = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        held.append(null)
        while held[-1] < want:
            held.append(os.dup(null))
        w = corral.Worker(PARENT, restart=False).start()
        try:
            assert w._proc.keeper.fileno() > 1023
            pids = spawn(w)
        finally:
            w.stop()
        assert left(pids) == {}
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))


@pytest.mark.parametrize("stage", STAGES)
def test_a_sigint_to_the_keeper_is_ignored_before_and_after_it_execs(stage):
    # Ignored, not handled: a handler would be reset by the exec, an ignored signal stays
    # ignored across it. The mask is what this asserts; what follows the kill is only what
    # a user sees (were SIGINT fatal, the keeper's end would come a moment later).
    with corral.Worker(PARENT) as w:
        worker = w.pid
        keeper = psutil.Process(worker).ppid()
        if stage == "exec'd":
            wait_until(lambda: execd(keeper), what="the keeper to exec")
        assert ignored_signals(keeper) & (1 << (signal.SIGINT - 1))
        os.kill(keeper, signal.SIGINT)
        assert not gone(keeper)
        assert w.call("pid") == worker  # the same worker, answering
