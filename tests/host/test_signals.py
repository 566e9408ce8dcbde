"""SIGTERM and SIGINT drain the calls in flight before the host exits (host/signals.py).

Each test runs a real host script in a subprocess with a real worker. The drained call is
gated on a FIFO that the test opens only once the host has logged that it is draining, so
the call is provably still running when the drain starts, and no test waits on a clock.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from conftest import fixture_ref, wait_until

SLOW = fixture_ref("slow:Slow")

HOST = textwrap.dedent("""
    import logging, os, signal, sys, threading, time
    import corral

    out, how = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    logging.basicConfig(filename=out + ".log", level=logging.INFO, format="%(message)s")

    def note(word):
        with open(out, "a") as f:
            f.write(word + "\\n")

    def wait_for_state(w, *states):
        deadline = time.monotonic() + 10
        while w.state not in states and time.monotonic() < deadline:
            time.sleep(0.002)

    def try_a_new_call(w):
        try:
            w.call("sleep", os.devnull, 0)
            note("a new call ran")
        except corral.InvalidState:
            note("refused")

    if how in ("drain", "impatient"):
        ref, side, fifo = args
        w = corral.Worker(ref).start()
        note(f"pid {w.pid}")
        try:
            note("returned " + w.call("gated", side, fifo))   # on the main thread
        except corral.WorkerCrashed:
            note("crashed")
        except BaseException as exc:
            note(type(exc).__name__)
            raise
        wait_for_state(w, "stopping", "stopped")
        try_a_new_call(w)
        threading.Event().wait()        # the re-delivered signal ends us
    elif how == "two":
        ref, side1, fifo1, side2, fifo2 = args
        ws = [corral.Worker(ref).start(), corral.Worker(ref).start()]
        note("pids " + " ".join(str(w.pid) for w in ws))
        futs = [ws[0].submit("gated", side1, fifo1), ws[1].submit("gated", side2, fifo2)]
        note("returned " + " ".join(f.result() for f in futs))
        threading.Event().wait()
    elif how == "own":
        sig, when = getattr(signal, args[0]), args[1]
        def own(signum, frame):
            note("own handler ran")
            sys.exit(3)                 # atexit stops the worker
        if when == "before":
            signal.signal(sig, own)
        w = corral.Worker(args[2]).start()
        note("corral's handler: " + str(signal.getsignal(sig).__module__ == "corral.host.signals"))
        if when == "after":
            signal.signal(sig, own)
        note(f"pid {w.pid}")
        threading.Event().wait()
    elif how == "none":
        sig = getattr(signal, args[0])
        corral.Worker(args[1]).start().stop()
        note("corral's handler: " + str(signal.getsignal(sig).__module__ == "corral.host.signals"))
        note("pid none")
        threading.Event().wait()
""")


class Host:
    """A host script running in a subprocess; ``out`` holds what it notes, ``log`` its
    log lines, ``err`` its stderr."""

    def __init__(self, tmp_path, how, *args, env=None):
        script = tmp_path / "host.py"
        script.write_text(HOST)
        self.out, self.log, self.err = (tmp_path / "host.out", tmp_path / "host.out.log",
                                        tmp_path / "host.err")
        with open(self.err, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(self.out), how, *map(str, args)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})

    def noted(self, prefix: str, path=None) -> str:
        """Wait for the line of ``path`` (default: the host's notes) that starts with
        ``prefix``; return the rest. Fails at once if the host ends first."""
        path = path or self.out
        found = []

        def seen() -> bool:
            found[:] = [ln for ln in lines(path) if ln.startswith(prefix)]
            return bool(found) or self.proc.poll() is not None

        wait_until(seen, timeout=30, what=f"{prefix!r} in {path.name}")
        assert found, (f"the host ended ({self.proc.returncode}) before writing {prefix!r} "
                       f"to {path.name}; its stderr:\n{self.err.read_text()}")
        return found[0][len(prefix):].strip()

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def lines(path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def release(fifo) -> None:
    """Let a gated call go on: write to its FIFO once it has opened it."""
    fds = []

    def opened() -> bool:
        try:
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        return bool(fds)

    wait_until(opened, what="the call to open its gate")
    os.write(fds[0], b"go")
    os.close(fds[0])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def gated(tmp_path, name="gate"):
    side, fifo = tmp_path / f"{name}.side", tmp_path / f"{name}.fifo"
    os.mkfifo(fifo)
    return side, fifo


@pytest.fixture
def start(tmp_path):
    """Start a Host; any still running when the test ends is killed (the assertion that
    failed says why)."""
    started = []

    def start(how, *args, env=None) -> Host:
        started.append(Host(tmp_path, how, *args, env=env))
        return started[-1]

    yield start
    for host in started:
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_the_call_in_flight_then_ends_the_host(tmp_path, start, sig):
    side, fifo = gated(tmp_path)
    host = start("drain", SLOW, side, fifo)
    pid = int(host.noted("pid"))
    host.noted("started", side)
    host.send_signal(sig)
    # The call is still running (it waits for us): the host drains instead of dying.
    log = host.noted("corral:", host.log)
    assert f"{sig.name} received: draining 1 call in flight on 1 worker" in log
    assert host.proc.poll() is None and not gone(pid)
    release(fifo)
    assert host.wait(30) == -sig
    assert lines(side) == ["started", "finished"]
    # The main thread read its reply; a call made while draining was refused.
    assert lines(host.out)[1:] == ["returned done", "refused"]
    assert gone(pid)  # the host stopped (and reaped) its worker before it ended
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in host.err.read_text()


def test_two_workers_are_drained_together(tmp_path, start):
    (side1, fifo1), (side2, fifo2) = gated(tmp_path, "one"), gated(tmp_path, "two")
    host = start("two", SLOW, side1, fifo1, side2, fifo2)
    pids = [int(p) for p in host.noted("pids").split()]
    host.noted("started", side1)
    host.noted("started", side2)
    host.send_signal(signal.SIGTERM)
    assert "draining 2 calls in flight on 2 workers" in host.noted("corral:", host.log)
    release(fifo2)
    release(fifo1)
    assert host.wait(30) == -signal.SIGTERM
    assert lines(host.out)[-1] == "returned done done"
    assert all(gone(pid) for pid in pids)


def test_calls_that_outlast_the_grace_fail_and_the_host_still_ends(tmp_path, start):
    side, fifo = gated(tmp_path)
    host = start("drain", SLOW, side, fifo, env={"CORRAL_DRAIN_GRACE": "0.2"})
    pid = int(host.noted("pid"))
    host.noted("started", side)
    host.send_signal(signal.SIGTERM)
    assert host.wait(30) == -signal.SIGTERM  # without the gate ever opening
    assert "(up to 0.2s)" in host.noted("corral:", host.log)
    assert lines(side) == ["started"]
    assert lines(host.out)[1:] == ["crashed", "refused"]
    assert gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_while_draining_does_not_wait(tmp_path, start, sig):
    side, fifo = gated(tmp_path)
    host = start("impatient", SLOW, side, fifo, env={"CORRAL_DRAIN_GRACE": "30"})
    pid = int(host.noted("pid"))
    host.noted("started", side)
    host.send_signal(sig)
    host.noted("corral:", host.log)
    host.send_signal(sig)
    # The gate never opens and the grace is 30 s: only impatience ends the host.
    assert host.wait(20) == -sig
    assert lines(side) == ["started"]
    if sig == signal.SIGINT:  # raised in the main thread, out of the call it was reading
        assert lines(host.out)[1:] == ["KeyboardInterrupt"]
    wait_until(lambda: gone(pid), timeout=5, what=f"worker {pid} to end")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_handler_the_application_sets_wins(start, sig, when):
    host = start("own", sig.name, when, SLOW)
    # Set before the worker starts: ours is not installed. Set after: it replaces ours.
    assert host.noted("corral's handler:") == str(when == "after")
    pid = int(host.noted("pid"))
    host.send_signal(sig)
    assert host.wait(30) == 3
    assert "own handler ran" in lines(host.out)
    assert gone(pid)  # its sys.exit ran atexit, which stopped the worker
    assert "corral:" not in host.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_with_no_live_worker_a_signal_acts_as_the_default(start, sig):
    host = start("none", sig.name, SLOW)
    assert host.noted("corral's handler:") == "True"  # installed, and stays out of the way
    host.noted("pid")
    host.send_signal(sig)
    assert host.wait(30) == -sig
    assert "corral:" not in host.log.read_text()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in host.err.read_text()
