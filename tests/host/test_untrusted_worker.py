"""The host survives a broken or hostile worker.

Real workers run ``tests/fixtures/evil_worker.py``, whose methods write forbidden bytes
straight onto the worker's own sockets. Whatever they write, the caller must get an error
promptly (never hang), the worker process must be killed and reaped, ``health()`` must say
failed, and later calls must fail the same way instead of waiting.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Any, Callable

import psutil
import pytest

import corral

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
EVIL = os.path.join(FIXTURES, "evil_worker.py") + ":EvilWorker"
EVIL_SETUP = os.path.join(FIXTURES, "evil_setup.py") + ":EvilSetup"
HANG_ON_RELOAD = os.path.join(FIXTURES, "hang_on_reload.py") + ":HangOnReload"
UNENCODABLE = os.path.join(FIXTURES, "unencodable_error.py") + ":UnencodableError"
MAX_FRAME = 1 << 20  # 1 MiB
MODES = ["call", "submit", "async"]
#: Generous bound for "promptly": a hang fails the test instead of blocking it.
DEADLINE = 15.0


def finish(fn: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Run ``fn`` in a thread; return its result or the exception it raised. Fails the
    test if it has not finished within ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            box["value"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"hung for {timeout}s"
    return box["value"]


def call_outcome(w: corral.Worker, mode: str, method: str, *args: Any) -> Any:
    """Make one call the way ``mode`` says and return its result or exception.

    ``call``: the caller's own thread reads the reply; ``submit``: the connection's
    reader thread does and a Future gets it; ``async``: an asyncio caller."""
    if mode == "call":
        return finish(lambda: w.call(method, *args))
    if mode == "submit":
        return finish(lambda: w.submit(method, *args).exception(DEADLINE) or "no error")
    if mode == "async":
        import asyncio

        return finish(lambda: asyncio.run(w.acall(method, *args)))
    raise ValueError(mode)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_defunct(w: corral.Worker, pid: int, kind: type[BaseException]) -> None:
    """The worker is dead, reported failed, and every later call fails with ``kind``."""
    assert gone(pid), "the worker process is still alive"
    health = finish(w.health)
    assert health.status == "failed", health
    assert health.detail
    assert w.state == "failed"
    for mode in MODES:
        later = call_outcome(w, mode, "ping")
        assert fails_with(later, kind), f"{mode}: {later!r}"
    assert fails_with(finish(lambda: list(w.stream("ping"))), kind)


def fails_with(outcome: Any, kind: type[BaseException]) -> bool:
    """A later call on a failed worker raises the failure itself, or InvalidState chained
    to it (``raise InvalidState(...) from failure``): either way, the same kind."""
    if isinstance(outcome, kind):
        return True
    if kind is corral.WorkerCrashed and isinstance(outcome, corral.WorkerUnavailable):
        return True  # a crash with restart=False: the worker is unavailable for good
    return isinstance(outcome, corral.InvalidState) and isinstance(outcome.__cause__, kind)


def stop_quickly(w: corral.Worker, grace: float = 10.0) -> None:
    t0 = time.monotonic()
    result = finish(lambda: w.stop(grace))
    assert not isinstance(result, BaseException), result
    assert time.monotonic() - t0 < 10
    assert w.state == "stopped"


@pytest.fixture
def evil():
    # restart=False: a crash is final here (restarts: tests/host/test_supervision.py)
    w = corral.Worker(EVIL, max_frame=MAX_FRAME, restart=False).start()
    try:
        assert w.call("ping") == "pong"
        yield w
    finally:
        stop_quickly(w)


# ---- data channel ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_garbage_frame_is_a_protocol_error(evil, mode):
    pid = evil.pid
    err = call_outcome(evil, mode, "send_garbage_frame")
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert "undecodable message from worker" in str(err)
    assert err.pid == pid
    assert_defunct(evil, pid, corral.ProtocolError)


@pytest.mark.parametrize("mode", MODES)
def test_oversize_frame_header_is_a_protocol_error(evil, mode):
    pid = evil.pid
    err = call_outcome(evil, mode, "announce_oversize_frame", MAX_FRAME + 1)
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert f"exceeds the limit of {MAX_FRAME} bytes" in str(err)
    assert_defunct(evil, pid, corral.ProtocolError)


def test_huge_frame_header_is_refused_without_allocating_it(evil):
    pid = evil.pid
    err = call_outcome(evil, "call", "announce_oversize_frame", 2**32 - 1)
    assert isinstance(err, corral.ProtocolError)
    assert_defunct(evil, pid, corral.ProtocolError)


@pytest.mark.parametrize("mode", MODES)
def test_truncated_frame_then_exit(evil, mode):
    # The stream ends inside a frame because the worker died while writing: that is a
    # crash, reported with the exit code (a worker killed mid-reply looks the same).
    pid = evil.pid
    err = call_outcome(evil, mode, "send_truncated_frame_and_exit", 3)
    assert isinstance(err, corral.WorkerCrashed), repr(err)
    assert err.exitcode == 3
    assert_defunct(evil, pid, corral.WorkerCrashed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call_id", [10**6, 2**64 - 1])
def test_done_for_a_call_never_made(evil, mode, call_id):
    pid = evil.pid
    err = call_outcome(evil, mode, "send_done_for_call", call_id)
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert f"Done for call {call_id}, which was never made" in str(err)
    assert_defunct(evil, pid, corral.ProtocolError)


def test_done_for_call_zero(evil):
    pid = evil.pid
    err = call_outcome(evil, "call", "send_done_for_call", 0)
    assert isinstance(err, corral.ProtocolError)
    assert_defunct(evil, pid, corral.ProtocolError)


def test_late_done_for_a_finished_call_is_ignored(evil):
    # Not an attack: a call that already ended may still have messages on the way.
    first = evil.submit("ping")
    assert first.result(DEADLINE) == "pong"
    assert finish(lambda: evil.call("send_done_for_call", first.id)) == "sent"
    assert finish(lambda: evil.call("ping")) == "pong"
    assert finish(evil.health).status == "ready"


def test_done_for_a_call_not_sent_yet(tmp_path):
    fifo = str(tmp_path / "go")
    os.mkfifo(fifo)
    # window = slots + prefetch = 1: while the first call runs, the second waits on the host
    w = corral.Worker(EVIL, max_frame=MAX_FRAME, prefetch=0, restart=False).start()
    try:
        first_id = w.submit("ping")
        first_id.result(DEADLINE)
        forger = w.submit("send_done_for_call_when_told", first_id.id + 2, fifo)
        victim = w.submit("ping")
        assert victim.id == first_id.id + 2
        assert w._conn.sent() == 1  # the victim call has not been sent to the worker
        with open(fifo, "w") as f:
            f.write("go")
        outcome = victim.exception(DEADLINE) or victim.result()
        forger.exception(DEADLINE)
        assert isinstance(outcome, corral.ProtocolError), f"victim got {outcome!r}"
    finally:
        stop_quickly(w)


def test_pickled_reply_is_refused_and_never_unpickled(evil, tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pid = evil.pid
    err = call_outcome(evil, "call", "reply_with_pickle", pickle.dumps(Trap()))
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert "pickle is not enabled" in str(err)
    assert not marker.exists()
    assert_defunct(evil, pid, corral.ProtocolError)


def test_host_message_on_the_data_channel(evil):
    pid = evil.pid
    err = call_outcome(evil, "call", "send_host_message")
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert_defunct(evil, pid, corral.ProtocolError)


def test_every_pending_call_fails_not_only_the_guilty_one(evil):
    pid = evil.pid
    guilty = evil.submit("send_garbage_frame")
    queued = [evil.submit("ping") for _ in range(20)]
    stream = evil.stream("ping")
    # With one slot the worker runs calls in order: the garbage precedes every other reply.
    for fut in [guilty, *queued]:
        assert isinstance(fut.exception(DEADLINE), corral.ProtocolError), fut
    assert fails_with(finish(lambda: list(stream)), corral.ProtocolError)
    assert_defunct(evil, pid, corral.ProtocolError)


def test_data_channel_closed_by_a_live_worker(evil):
    # The worker hangs up but stays alive: the host kills it (after a short grace) and
    # reports a crash.
    pid = evil.pid
    err = call_outcome(evil, "call", "close_data_and_linger")
    assert isinstance(err, corral.WorkerCrashed), repr(err)
    assert err.signal_name == "SIGKILL"
    assert_defunct(evil, pid, corral.WorkerCrashed)


# ---- control channel ---------------------------------------------------------------------


@pytest.mark.parametrize("method, text", [
    ("garbage_on_control_then_block", "undecodable message from worker"),
    ("unsolicited_pong_then_block", "control request 987654, which was never made"),
    ("oversize_on_control_then_block", "exceeds the limit"),
])
@pytest.mark.parametrize("mode", ["call", "submit"])
def test_bad_control_message_fails_the_call_in_flight(evil, method, text, mode):
    pid = evil.pid
    err = call_outcome(evil, mode, method)
    assert isinstance(err, corral.ProtocolError), repr(err)
    assert text in str(err)
    assert err.pid == pid
    assert_defunct(evil, pid, corral.ProtocolError)


def test_wrong_reply_type_to_a_ping(evil):
    assert finish(lambda: evil.call("swap_control_replies")) == "swapped"
    health = finish(evil.health)
    if isinstance(health, BaseException):
        raise health
    assert health.status == "failed"


def test_wrong_reply_type_to_a_reload(evil):
    assert finish(lambda: evil.call("swap_control_replies")) == "swapped"
    err = finish(evil.reload)
    if isinstance(err, AttributeError):
        assert evil.state == "reloading"  # and stays so
        raise err
    assert err is None or isinstance(err, corral.ProtocolError), repr(err)
    assert evil.state in ("failed", "ready"), evil.state


def test_stop_is_not_blocked_by_a_hanging_reload():
    w = corral.Worker(HANG_ON_RELOAD).start()
    pid = w.pid
    reloading = threading.Thread(target=lambda: finish(lambda: w.reload({"hang": True})),
                                 daemon=True)
    try:
        reloading.start()
        deadline = time.monotonic() + DEADLINE
        while w.state != "reloading":  # reload() sets it before it sends the request
            assert time.monotonic() < deadline
            time.sleep(0.001)
        stopper = threading.Thread(target=w.stop, kwargs={"grace": 0.1}, daemon=True)
        stopper.start()
        stopper.join(5.0)
        assert not stopper.is_alive(), "stop(grace=0.1) still blocked after 5 s"
    finally:
        if not gone(pid):
            os.kill(pid, 9)  # unblocks reload(), then stop()
        reloading.join(DEADLINE)
        stop_quickly(w)


# ---- user code that the wire cannot carry ---------------------------------------------


@pytest.mark.parametrize("slots", [1, 2])
def test_unencodable_return_value_fails_only_the_call(slots):
    w = corral.Worker(UNENCODABLE, slots=slots).start()
    try:
        err = call_outcome(w, "call", "return_surrogate")
        assert isinstance(err, corral.RemoteError) and isinstance(err, UnicodeEncodeError)
        assert finish(lambda: w.call("ping")) == "pong"
    finally:
        stop_quickly(w)


@pytest.mark.parametrize("slots", [1, 2])
def test_unencodable_error_message_fails_only_the_call(slots):
    w = corral.Worker(UNENCODABLE, slots=slots).start()
    try:
        err = finish(lambda: w.submit("raise_surrogate").exception(3.0))
        assert isinstance(err, corral.RemoteError) and isinstance(err, ValueError), repr(err)
        assert finish(lambda: w.call("ping")) == "pong"
    finally:
        stop_quickly(w, grace=0.5)  # the lost call would hold a longer grace to the end


# ---- during startup ----------------------------------------------------------------------


@pytest.mark.parametrize("mode, kind", [
    ("garbage", corral.ProtocolError),
    ("oversize", corral.ProtocolError),
    ("pong", corral.ProtocolError),
    ("exit_mid_frame", corral.WorkerStartupError),  # died while writing: a crash
])
def test_bad_control_message_during_setup(mode, kind):
    w = corral.Worker(EVIL_SETUP, config={"mode": mode}, max_frame=MAX_FRAME)
    try:
        err = finish(w.start)
        assert isinstance(err, kind), repr(err)
        pid = w.pid
        assert pid is None or gone(pid)
        assert w.state == "failed"
        assert finish(w.health).status == "failed"
        assert fails_with(finish(lambda: w.call("ping")), corral.CorralError)
    finally:
        stop_quickly(w)
