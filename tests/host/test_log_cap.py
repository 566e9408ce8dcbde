"""A call keeps at most ``CORRAL_MAX_LOG_BYTES`` of log text on the host (issue 12, item 2):
the oldest lines go first, one marker line says how much went, and the newest are kept,
whether the model prints from Python or floods fd 1 as C code does."""

import re

import pytest

import corral
from conftest import fixture_ref

MARKER = re.compile(r"^\[corral: (\d+) bytes \((\d+) lines\) of older log output dropped; "
                    r"the last (\d+) kept\]\n$")


@pytest.fixture
def chatty(monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_LOG_BYTES", "20000")
    with corral.Worker(fixture_ref("cogish:Chatty")) as w:
        yield w


@pytest.mark.parametrize("fd", [False, True])
def test_a_flood_of_log_lines_keeps_the_newest_within_the_cap(chatty, fd):
    n, width = 30_000, 40  # 1.2 MB of lines (40 characters each, without the newline)
    fut = chatty.submit("predict", n=n, width=width, fd=fd)
    assert fut.result(timeout=120) == "done"
    logs = fut.logs
    match = MARKER.match(logs[0])
    assert match, logs[0]
    kept = logs[1:]
    assert 20000 - width <= sum(len(line) for line in kept) <= 20000
    dropped_bytes, dropped_lines, cap = map(int, match.groups())
    assert cap == 20000
    assert fut.events.dropped_bytes == dropped_bytes
    assert dropped_bytes > n * width - 2 * 20000
    if not fd:  # (fd writes reach the call in whatever pieces the pipe gives)
        assert dropped_lines == n - len(kept)
        assert dropped_bytes == dropped_lines * width
        assert kept[-1] == f"{n - 1:08d}" + "x" * (width - 8)  # the newest line is kept
        assert kept[0] == f"{n - len(kept):08d}" + "x" * (width - 8)
    # The worker is fine, and the next call starts with an empty log.
    nxt = chatty.submit("predict", n=2, width=10)
    assert nxt.result(timeout=30) == "done" and len(nxt.logs) == 2


def test_events_keep_their_order_around_the_marker():
    from corral.host.logbuffer import EventLog
    from corral.protocol import messages as m

    log = EventLog(max_bytes=10)
    log.append(m.Progress(1, 1.0))
    for i in range(5):
        log.append(m.Log(1, "stdout", f"line{i}"))  # 5 bytes each: two fit
    log.append(m.Metric(1, "x", 1, "set"))
    kinds = [(type(e).__name__, getattr(e, "text", None)) for e in log]
    assert kinds[0] == ("Progress", None)
    assert kinds[1][0] == "Log" and kinds[1][1].startswith("[corral: 15 bytes (3 lines)")
    assert kinds[2:] == [("Log", "line3"), ("Log", "line4"), ("Metric", None)]
    assert len(log) == 5 and log[-1].name == "x"
    # A line longer than the whole cap keeps its end.
    log.append(m.Log(1, "stdout", "0123456789abcdef"))
    assert [e.text for e in log if type(e) is m.Log][-1] == "6789abcdef"
