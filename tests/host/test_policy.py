"""The decisions of host/policy.py, as tables: no processes, no clocks."""

from __future__ import annotations

import pytest

import corral
from corral.host.policy import AfterFailure, ExitMeaning, after_failure, exit_meaning, pick

CRASHED = corral.WorkerCrashed("died", pid=1)
GONE = corral.WorkerUnavailable("gave up")
STOPPED = corral.WorkerStopped("stopped")
REMOTE = corral.RemoteError("builtins.ValueError", "x")
PROTOCOL = corral.ProtocolError("garbage")
TIMEOUT = corral.CallTimeout("late", 1.0)


@pytest.mark.parametrize("error, sent, idempotent, retries, expected", [
    (None, True, True, 0, AfterFailure.FAIL),  # (a result: nothing to do)
    (CRASHED, False, False, 0, AfterFailure.REQUEUE),  # never ran: safe to send again
    (CRASHED, False, True, 1, AfterFailure.REQUEUE),
    (CRASHED, True, False, 0, AfterFailure.FAIL),  # ran, not idempotent
    (CRASHED, True, True, 0, AfterFailure.RETRY),
    (CRASHED, True, True, 1, AfterFailure.FAIL),  # retried once already
    (GONE, False, False, 0, AfterFailure.REQUEUE),  # waited for a restart that gave up
    (GONE, True, True, 0, AfterFailure.FAIL),
    (STOPPED, True, True, 0, AfterFailure.FAIL),  # you stopped it: not a crash
    (STOPPED, False, True, 0, AfterFailure.FAIL),
    (REMOTE, True, True, 0, AfterFailure.FAIL),
    (PROTOCOL, True, True, 0, AfterFailure.FAIL),  # its result may be what broke it
    (PROTOCOL, False, True, 0, AfterFailure.FAIL),
    (TIMEOUT, True, True, 0, AfterFailure.FAIL),
])
def test_after_failure(error, sent, idempotent, retries, expected):
    assert after_failure(error, sent, idempotent, retries) is expected


@pytest.mark.parametrize("usable, loads, rooms, avoid, expected", [
    ([True, True], [0, 0], [2, 2], None, 0),  # ties: the first
    ([True, True], [1, 0], [2, 2], None, 1),  # the least loaded
    ([True, True], [0, 1], [2, 2], 0, 1),  # not where it crashed, if another has room
    ([True, True], [0, 2], [2, 2], 0, 0),  # ... but there rather than nowhere
    ([False, True], [0, 1], [2, 2], None, 1),  # not ready (or suspect): passed over
    ([True, True], [2, 2], [2, 2], None, None),  # no room anywhere: queue it
    ([False, False], [0, 0], [2, 2], None, None),
    ([True, True, True], [3, 1, 1], [4, 1, 2], None, 2),  # room is per worker
    ([], [], [], None, None),
])
def test_pick(usable, loads, rooms, avoid, expected):
    assert pick(usable, loads, rooms, avoid) == expected


@pytest.mark.parametrize("current, retired, reason, meaning, counts", [
    (True, False, None, ExitMeaning.DIED, True),  # a crash: the policy restarts it
    (True, False, "was killed because call 3 ...", ExitMeaning.KILLED, True),
    (True, True, None, ExitMeaning.DIED, False),  # recycled: its replacement is under way
    (False, False, None, ExitMeaning.STOPPED, False),  # stop(), or already replaced
    (False, True, None, ExitMeaning.STOPPED, False),
    (False, False, "killed for a stuck cancel", ExitMeaning.KILLED, False),
])
def test_exit_meaning(current, retired, reason, meaning, counts):
    assert exit_meaning(current, retired, reason) == (meaning, counts)
