"""SIGTERM and SIGINT drain the calls in flight before the host exits (host/signals.py).

Each test runs a real host script in a subprocess with a real worker. The drained call, and
the worker's teardown, are gated on FIFOs that the test opens only once it has seen what it
checks (the host logging that it drains, a new call refused, the reply read), so no test
waits on a clock.

CPython runs a signal's Python handler only when the main thread next executes bytecode:
a signal that lands just as the main thread goes to sleep in a system call waits until it
wakes (host/signals.py says more). So a host waits for its signal in a polling loop, not in
``Event().wait()``, and a test that signals a host blocked in ``call()`` first waits until
its main thread is asleep reading the socket.
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
    args = [None if a == "-" else a for a in sys.argv[3:]]
    logging.basicConfig(filename=out + ".log", level=logging.INFO, format="%(message)s")

    def note(word):
        with open(out, "a") as f:
            f.write(word + "\\n")

    def idle():                         # wait for a signal (not Event().wait(): see above)
        while True:
            time.sleep(0.005)

    def refuse_while_draining(w, trigger):
        with open(trigger) as f:        # the test opens it once the drain has begun
            f.read()
        while w.state == "ready":       # stop() is a thread hop behind the log line
            time.sleep(0.001)
        try:
            w.call("sleep", os.devnull, 0)
            note("a new call ran")
        except corral.InvalidState:
            note("refused")

    if how == "drain":
        ref, side, fifo, teardown_gate, trigger = args
        w = corral.Worker(ref, config={"side": side, "teardown_gate": teardown_gate}).start()
        note(f"pid {w.pid}")
        if trigger:
            threading.Thread(target=refuse_while_draining, args=(w, trigger),
                             daemon=True).start()
        try:
            note("returned " + w.call("gated", side, fifo))   # on the main thread
        except (corral.WorkerCrashed, corral.WorkerStopped) as exc:  # cut off by the drain
            note(type(exc).__name__)
        idle()                          # the re-delivered signal ends us
    elif how == "impatient":
        ref, side, fifo = args
        w = corral.Worker(ref).start()
        note(f"pid {w.pid}")
        fut = w.submit("gated", side, fifo)
        try:
            while not fut.done():       # see test_a_second_signal_while_draining_does_not_wait
                time.sleep(0.005)
        except BaseException as exc:
            note(type(exc).__name__)
            raise
    elif how == "two":
        ref, side1, fifo1, gate1, side2, fifo2, gate2 = args
        ws = [corral.Worker(ref, config={"side": side1, "teardown_gate": gate1}).start(),
              corral.Worker(ref, config={"side": side2, "teardown_gate": gate2}).start()]
        note("pids " + " ".join(str(w.pid) for w in ws))
        futs = [ws[0].submit("gated", side1, fifo1), ws[1].submit("gated", side2, fifo2)]
        while not all(f.done() for f in futs):
            time.sleep(0.005)
        note("returned " + " ".join(f.result() for f in futs))
        idle()
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
        idle()
    elif how == "none":
        sig = getattr(signal, args[0])
        corral.Worker(args[1]).start().stop()
        note("corral's handler: " + str(signal.getsignal(sig).__module__ == "corral.host.signals"))
        note("pid none")
        idle()
""")


def _default_signals() -> None:
    """The host starts with SIGINT and SIGTERM at their defaults, as from a terminal: a
    suite launched in the background by a non-interactive shell inherits SIGINT ignored,
    and a host started that way rightly leaves an ignored signal alone."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
                preexec_fn=_default_signals)

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


def reading_its_socket(pid: int) -> bool:
    """Whether the host's main thread sleeps in the kernel reading a Unix socket: blocked
    in call(), waiting for its worker's reply."""
    with open(f"/proc/{pid}/task/{pid}/wchan") as f:
        return "unix_stream" in f.read()


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
    _, teardown_gate = gated(tmp_path, "teardown")
    _, trigger = gated(tmp_path, "trigger")
    host = start("drain", SLOW, side, fifo, teardown_gate, trigger)
    pid = int(host.noted("pid"))
    host.noted("started", side)
    wait_until(lambda: reading_its_socket(host.proc.pid),
               what="the host's main thread to wait in call() for the reply")
    host.send_signal(sig)
    # The call is still running (it waits for us): the host drains instead of dying,
    # and a call made meanwhile (from another thread) is refused.
    log = host.noted("corral:", host.log)
    assert f"{sig.name} received: draining 1 call in flight on 1 worker" in log
    release(trigger)
    host.noted("refused")
    assert host.proc.poll() is None and not gone(pid)
    release(fifo)
    # The main thread reads its reply; then the worker's teardown runs (and waits for us).
    assert host.noted("returned") == "done"
    host.noted("teardown", side)
    assert host.proc.poll() is None
    release(teardown_gate)
    assert host.wait(30) == -sig
    assert lines(side) == ["started", "finished", "teardown"]
    assert lines(host.out)[1:] == ["refused", "returned done"]
    assert gone(pid)  # the host stopped (and reaped) its worker before it ended
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in host.err.read_text()


def test_two_workers_are_drained_together(tmp_path, start):
    (side1, fifo1), (_, gate1) = gated(tmp_path, "one"), gated(tmp_path, "down1")
    (side2, fifo2), (_, gate2) = gated(tmp_path, "two"), gated(tmp_path, "down2")
    host = start("two", SLOW, side1, fifo1, gate1, side2, fifo2, gate2)
    pids = [int(p) for p in host.noted("pids").split()]
    host.noted("started", side1)
    host.noted("started", side2)
    host.send_signal(signal.SIGTERM)
    assert "draining 2 calls in flight on 2 workers" in host.noted("corral:", host.log)
    release(fifo2)
    release(fifo1)
    assert host.noted("returned") == "done done"
    # Both teardowns run at once: the workers are stopped in parallel.
    host.noted("teardown", side1)
    host.noted("teardown", side2)
    release(gate1)
    release(gate2)
    assert host.wait(30) == -signal.SIGTERM
    assert all(gone(pid) for pid in pids)


def test_calls_that_outlast_the_grace_fail_and_the_host_still_ends(tmp_path, start):
    side, fifo = gated(tmp_path)
    host = start("drain", SLOW, side, fifo, "-", "-", env={"CORRAL_DRAIN_GRACE": "0.2"})
    pid = int(host.noted("pid"))
    host.noted("started", side)
    wait_until(lambda: reading_its_socket(host.proc.pid),
               what="the host's main thread to wait in call() for the reply")
    host.send_signal(signal.SIGTERM)
    assert host.wait(30) == -signal.SIGTERM  # without the gate ever opening
    assert "(up to 0.2s)" in host.noted("corral:", host.log)
    assert "finished" not in lines(side)
    assert gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_while_draining_does_not_wait(tmp_path, start, sig):
    side, fifo = gated(tmp_path)
    host = start("impatient", SLOW, side, fifo, env={"CORRAL_DRAIN_GRACE": "30"})
    pid = int(host.noted("pid"))
    host.noted("started", side)
    host.send_signal(sig)
    host.noted("corral:", host.log)
    # The log line is written by the thread our handler has just woken, so this signal
    # may well land as the host's main thread goes back to sleep after that handler, and
    # wait until it wakes (see the top of this file): it polls, so that is within 5 ms.
    host.send_signal(sig)
    # The gate never opens and the grace is 30 s: only impatience ends the host.
    assert host.wait(20) == -sig
    assert lines(side) == ["started"]
    if sig == signal.SIGINT:
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


@pytest.mark.parametrize("text, grace", [
    (None, 30.0), ("2.5", 2.5), ("0", 0.0), ("soon", 30.0), ("-1", 30.0), ("nan", 30.0)])
def test_the_drain_grace_comes_from_the_environment(monkeypatch, caplog, text, grace):
    from corral.host import signals

    if text is None:
        monkeypatch.delenv("CORRAL_DRAIN_GRACE", raising=False)
    else:
        monkeypatch.setenv("CORRAL_DRAIN_GRACE", text)
    assert signals._grace() == grace
    warned = "CORRAL_DRAIN_GRACE" in caplog.text
    assert warned == (text is not None and grace == 30.0)
