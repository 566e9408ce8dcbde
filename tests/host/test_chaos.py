"""Chaos: 8 threads call a Pool of 2 while SIGKILL hits a random worker 20 times.

Every call must end with its result or a typed corral error, no thread may hang, and the
pool must be back to full strength after each kill. ``pytest -s`` shows the counts; they
are also in the assertion messages.
"""

import collections
import os
import random
import signal
import threading
import time

import pytest

import corral
from conftest import fixture_ref, wait_until

CRASHY = fixture_ref("supervised:Crashy")
THREADS = 8
KILLS = 20


@pytest.mark.timeout(60)
def test_chaos_kills_while_threads_call_a_pool():
    t0 = time.monotonic()
    counts: collections.Counter = collections.Counter()
    wrong: list = []  # results that are not what the call should have returned
    untyped: list = []  # errors that are not corral's typed errors
    lock = threading.Lock()
    stop = threading.Event()
    rng = random.Random(int(os.environ.get("CHAOS_SEED", time.time_ns())))
    # The backoff doubles with each crash in the window (up to max_backoff, 5 s by default):
    # capped low, so that 20 kills fit well within the time limit.
    policy = corral.Restart(max_restarts=1000, backoff=0.01, max_backoff=0.1)

    with corral.Pool(CRASHY, workers=2, slots=2, restart=policy) as pool:
        idem = pool.options(idempotent=True)

        def caller(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                kind = ("idempotent" if i % 2 else "plain")
                opts = idem if kind == "idempotent" else pool
                try:
                    if i % 5 == 0:
                        ms = 1 + i % 4
                        expected = ms / 1000
                        got = opts.call("sleep", expected)
                    elif i % 7 == 0:
                        expected = (n, i)
                        got = opts.submit("echo", expected).result(timeout=30)
                    else:
                        expected = (n, i)
                        got = opts.call("echo", expected)
                    outcome = f"{kind} ok"
                    if got != expected:
                        with lock:
                            wrong.append((expected, got))
                except corral.CorralError as exc:
                    outcome = f"{kind} {type(exc).__name__}"
                except BaseException as exc:  # noqa: BLE001 - counted as a failure below
                    outcome = f"{kind} untyped {type(exc).__name__}"
                    with lock:
                        untyped.append(repr(exc))
                with lock:
                    counts[outcome] += 1

        threads = [threading.Thread(target=caller, args=(n,), daemon=True, name=f"chaos-{n}")
                   for n in range(THREADS)]
        for t in threads:
            t.start()

        kills = []
        recoveries = []  # seconds from each kill to full strength
        for _ in range(KILLS):
            victim = rng.choice([w for w in pool.workers if w.state == "ready"])
            pid = victim.pid
            wait_until(lambda: victim.load > 0 or victim.pid != pid, what="calls in flight")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kills.append(pid)
            killed_at = time.monotonic()
            wait_until(lambda: pool.ready == 2 and victim.pid != pid, timeout=20,
                       what=f"the pool to be back to 2 ready workers after killing {pid}")
            recoveries.append(time.monotonic() - killed_at)
            # Back to full strength: each worker answers a ping from a live process.
            assert all(h.status in ("ready", "busy") for h in pool.health().workers)
        stop.set()
        deadline = time.monotonic() + 20
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in threads if t.is_alive()]
        stats = pool.stats()
        restarts = pool.health().restarts

    elapsed = time.monotonic() - t0
    report = (f"chaos: {KILLS} kills in {elapsed:.1f} s, {sum(counts.values())} calls: "
              f"{dict(sorted(counts.items()))}; pool retries={stats.retries} "
              f"requeued={stats.requeued} restarts={restarts}; back to full strength in "
              f"{min(recoveries):.2f}..{max(recoveries):.2f} s "
              f"(median {sorted(recoveries)[len(recoveries) // 2]:.2f} s)")
    print("\n" + report)
    assert not hung, f"threads hung: {hung}; {report}"
    assert not untyped, f"untyped errors: {untyped[:5]}; {report}"
    assert not wrong, f"wrong results: {wrong[:5]}; {report}"
    assert len(set(kills)) == KILLS and restarts == KILLS, report
    allowed = {"ok", "WorkerCrashed"}
    assert {o.split(" ", 1)[1] for o in counts} <= allowed, report
    assert counts["plain ok"] > 0 and counts["idempotent ok"] > 0, report
    # The kills hit calls in flight: some plain calls failed, some idempotent were retried.
    assert counts["plain WorkerCrashed"] > 0 and stats.retries > 0, report
