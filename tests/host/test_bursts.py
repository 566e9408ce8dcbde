"""Several calls or replies per system call (issue 19), with real workers.

The worker holds the reply of a call when the next call is already in its buffer
(worker/replies.py) and the host sends map() calls in batches. What must hold whatever the
batching: every reply arrives, in order, and a finished call's reply does not wait for a
slow call queued behind it. No test waits on a clock: gates are FIFOs opened by the test.
"""

import os

import pytest

import corral
from conftest import fixture_ref, wait_until

SLOW = fixture_ref("slow:Slow")
BASIC = fixture_ref("basic:Basic")


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def test_a_held_reply_does_not_wait_for_the_slow_call_behind_it(tmp_path):
    side1, side2 = str(tmp_path / "one"), str(tmp_path / "two")
    gate1, gate2 = str(tmp_path / "gate1"), str(tmp_path / "gate2")
    os.mkfifo(gate1)
    os.mkfifo(gate2)
    with corral.Worker(SLOW) as w:
        first = w.submit("gated", side1, gate1)
        wait_until(lambda: _lines(side1) == ["started"], what="the first call to start")
        # Both reach the worker's socket while it is busy, and are read in one burst: the
        # quick call's reply is held while the gated one behind it is already buffered.
        quick = w.submit("quick", "q")
        second = w.submit("gated", side2, gate2)
        with open(gate1, "w") as f:
            f.write("go")
        assert first.result(timeout=30) == "done"
        assert quick.result(timeout=30) == "q"  # sent while the second call still runs
        assert _lines(side2) == ["started"]
        with open(gate2, "w") as f:
            f.write("go")
        assert second.result(timeout=30) == "done"


def test_an_async_reply_held_for_the_loop_is_sent_when_the_loop_blocks(tmp_path):
    """The replies of async calls wait for the event loop to run what is ready (one write
    for calls that finish together). The wake-up of the call that then blocks the loop is
    ready before that write: the reply must go out anyway (the watchdog writes it)."""
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    with corral.Worker(SLOW, slots=2) as w:
        blocker = w.submit("await_trigger_then_block", gate)
        trigger = w.submit("trigger")
        assert trigger.result(timeout=30) == "triggered"  # while the loop is blocked
        assert not blocker.done()
        with open(gate, "w") as f:
            f.write("go")
        assert blocker.result(timeout=30) == "unblocked"


def test_async_calls_in_bursts_all_answer_in_order():
    """Async calls reach the event loop in batches (one wake-up of its thread per batch)
    and their replies leave in batches: every one arrives, with its own result."""
    import asyncio

    async def main(w):
        return await asyncio.gather(*[w.acall("aadd", i, i) for i in range(2000)])

    with corral.Worker(BASIC, slots=8) as w:
        assert asyncio.run(main(w)) == [2 * i for i in range(2000)]
        assert list(w.map("aadd", range(500))) == [i + 1 for i in range(500)]


@pytest.mark.parametrize("prefetch", [0, 1, 5, 63, 128])
def test_map_results_arrive_in_order_for_any_window(prefetch):
    with corral.Worker(BASIC, prefetch=prefetch) as w:
        n = 1000
        assert list(w.map("add", range(n), range(n))) == [2 * i for i in range(n)]
        assert w.call("add", 1, 2) == 3


def test_an_event_loop_sends_a_call_to_an_idle_worker_at_once(tmp_path):
    """A loop's call to a worker with nothing in flight goes out when it is made, not at
    the end of the loop's iteration: a sequential caller waits on exactly that call (the
    deferred write cost ~40 us a call). Checked from inside the iteration: the worker
    starts the call while the loop has not yielded."""
    import asyncio

    side, gate = str(tmp_path / "side"), str(tmp_path / "gate")
    os.mkfifo(gate)

    async def main(w):
        for word in ("one", "two"):  # (the loop reads replies, and stops once idle)
            assert await w.acall("quick", word) == word
        fut = w.asubmit("gated", side, gate)
        wait_until(lambda: _lines(side) == ["started"], what="the call to start")
        with open(gate, "w") as f:
            f.write("go")
        return await fut

    with corral.Worker(SLOW) as w:
        assert asyncio.run(main(w)) == "done"


def test_an_event_loop_sends_its_calls_in_batches_while_it_makes_more(tmp_path):
    """Calls made on an event loop wait for the end of its iteration to go out together,
    but no more than LOOP_BATCH of them: the worker starts on those while the loop makes
    the rest (the worker would otherwise idle through the whole iteration)."""
    import asyncio

    from corral.host.connection import LOOP_BATCH

    side, gate = str(tmp_path / "side"), str(tmp_path / "gate")
    os.mkfifo(gate)

    async def main(w):
        # (the first goes at once: the loop reads replies once it has calls out)
        futs = [w.asubmit("quick", "first"), w.asubmit("gated", side, gate)]
        futs += [w.asubmit("quick", str(i)) for i in range(LOOP_BATCH - 1)]
        # Still inside the iteration that made them (no await yet): the first batch went.
        wait_until(lambda: _lines(side) == ["started"], what="the first call to start")
        with open(gate, "w") as f:
            f.write("go")
        futs.append(w.asubmit("quick", "last"))  # one in the outbox, sent at the end
        return await asyncio.gather(*futs)

    with corral.Worker(SLOW) as w:
        results = asyncio.run(main(w))
    assert results == ["first", "done", *map(str, range(LOOP_BATCH - 1)), "last"]
