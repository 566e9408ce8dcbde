"""The crash table (issue 13): every phase of a worker's life x every way of failing ->
the error the caller gets, and whether the worker is still usable afterwards.

In the manner of loky's ``crash_cases``. "usable" means the next call succeeds: on the
same process (``same``) or on a restarted one (``restarted``); ``no``: start() raised.
"""

from __future__ import annotations

import os
import sys

import pytest

import corral
from conftest import FIXTURES, fixture_ref, wait_until

sys.path.insert(0, FIXTURES)  # the Trigger type must be importable by that name in the worker
from crash_phases import WAYS, Trigger  # noqa: E402

TARGET = fixture_ref("crash_phases:CrashPhases")
RESTART = corral.Restart(backoff=0.01)
DEADLINE = 30.0

FATAL = {"os._exit": "exit code 3", "SIGKILL": "SIGKILL", "segfault": "SIGSEGV"}


def expected(phase: str, way: str) -> tuple[type, str, str]:
    """(error type, text in its message, usable) for ``phase`` x ``way``."""
    if phase in ("import", "setup"):
        if way in FATAL:
            return corral.WorkerStartupError, FATAL[way], "no"
        return corral.SetupError, "SystemExit" if way == "sys.exit" else "RuntimeError", "no"
    if phase == "idle":
        return type(None), "", "restarted" if way in FATAL else "same"
    if way in FATAL:
        return corral.WorkerCrashed, FATAL[way], "restarted"
    if phase == "decode":  # user code inside corral's codec: the call fails
        return TypeError, "cannot decode the arguments", "same"
    if way == "sys.exit":  # a SystemExit of the call is its error, not the worker's end
        return corral.RemoteError, "SystemExit: 3", "same"
    if phase == "encode":
        return TypeError, "cannot send a value", "same"
    return RuntimeError, "failing by raise", "same"


CASES = [(phase, way) for phase in ("import", "setup", "decode", "run", "chunk", "encode",
                                    "idle") for way in WAYS]


def fail_in(w: corral.Worker, phase: str, way: str, tmp_path) -> BaseException | None:
    try:
        if phase == "decode":
            w.call("take", Trigger(way))
        elif phase == "run":
            w.call("run", way)
        elif phase == "chunk":
            assert next(iter(stream := w.stream("chunks", way))) == 1
            list(stream)
        elif phase == "encode":
            w.call("result", way)
        elif phase == "idle":
            fifo, marker = str(tmp_path / "gate"), tmp_path / "marker"
            os.mkfifo(fifo)
            assert w.call("arm", way, fifo, str(marker)) == "armed"
            restarts = w.health().restarts
            with open(fifo, "w") as f:
                f.write("go")
            wait_until(marker.exists, DEADLINE, "the idle thread to fail")
            if way in FATAL:
                wait_until(lambda: w.health().restarts > restarts and w.state == "ready",
                           DEADLINE, "the restart after an idle crash")
    except BaseException as exc:  # noqa: BLE001 - the outcome under test
        return exc
    return None


@pytest.mark.parametrize("phase, way", CASES)
def test_crash_table(phase, way, tmp_path):
    error_type, text, usable = expected(phase, way)
    kw: dict = {"restart": RESTART, "allow_pickle": phase == "encode"}
    if phase == "import":
        kw["env"] = {"CRASH_AT": "import", "CRASH_WAY": way}
    if phase == "setup":
        kw["config"] = {"at": "setup", "way": way}
    w = corral.Worker(TARGET, **kw)
    try:
        if usable == "no":
            with pytest.raises(error_type, match=text):
                w.start()
            return
        w.start()
        pid = w.pid
        outcome = fail_in(w, phase, way, tmp_path)
        assert isinstance(outcome, error_type), repr(outcome)
        if text:
            assert text in str(outcome)
        if usable == "restarted":
            wait_until(lambda: w.state == "ready", DEADLINE, "the restart")
        assert w.call("ok") == "ok"
        assert (w.pid == pid) is (usable == "same"), (w.pid, pid)
        if usable == "restarted":
            assert w.crashes and FATAL[way] in w.crashes[-1].reason
    finally:
        w.stop()
