"""Finished prediction records are dropped after ``retention`` seconds or beyond
``max_records``; the clock is the test's own, the cleanup runs on create and finish."""

import pytest

from conftest import wait_until

from .conftest import open_gate, serving, started, worker


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_records_older_than_the_retention_are_dropped():
    with serving(worker("Typed"), retention=60) as srv, srv.client() as c:
        clock = Clock()
        srv.app.state.predictions.retention.clock = clock
        assert c.post("/predictions", json={"id": "old", "input": {"text": "a"}}).json()[
            "status"] == "succeeded"
        clock.now += 59
        assert c.post("/predictions", json={"id": "mid", "input": {"text": "b"}}).json()[
            "status"] == "succeeded"
        assert c.get("/predictions/old").status_code == 200
        clock.now += 2  # "old" is 61s old, "mid" 2s: the next prediction drops only "old"
        c.post("/predictions", json={"id": "new", "input": {"text": "c"}})
        assert c.get("/predictions/old").status_code == 404
        assert c.get("/predictions/mid").json()["output"] == "b"
        assert c.get("/predictions/new").json()["output"] == "c"


def test_beyond_max_records_the_oldest_finished_go_first():
    with serving(worker("Typed"), max_records=2) as srv, srv.client() as c:
        for i in range(4):
            c.post("/predictions", json={"id": f"p{i}", "input": {"text": str(i)}})
        # each finish prunes: only the two newest are kept
        assert [c.get(f"/predictions/p{i}").status_code for i in range(4)] == \
            [404, 404, 200, 200]
        assert list(srv.app.state.predictions.records) == ["p2", "p3"]


def test_an_unfinished_record_is_never_dropped(tmp_path, fifo):
    side = str(tmp_path / "side")
    from .conftest import pool

    runner = pool("Gated", workers=1, slots=1, prefetch=0, max_queue=10)
    with serving(runner, max_records=1, retention=0) as srv, srv.client() as c:
        async_ = {"Prefer": "respond-async"}
        for pid in ("a", "b"):
            assert c.post("/predictions", json={"id": pid, "input": {"side": side,
                                                                      "fifo": fifo}},
                          headers=async_).status_code == 202
        # both unfinished, over max_records: both kept
        assert c.get("/predictions/a").status_code == 200
        assert c.get("/predictions/b").status_code == 200
        wait_until(lambda: started(side) == 1, 30, "a to start")
        open_gate(fifo, "a")
        wait_until(lambda: started(side) == 2, 30, "b to start")
        # "a" finished with retention=0: dropped; "b" runs on
        wait_until(lambda: c.get("/predictions/a").status_code == 404, 30, "a to go")
        assert c.get("/predictions/b").json()["status"] == "processing"
        open_gate(fifo, "b")
        wait_until(lambda: c.get("/predictions/b").status_code == 404, 30, "b to go")


CASES = {"plain": ("Typed", {"text": "x"}), "streamed output": ("Gen", {"n": 3}),
         "failed": ("Fails", {"x": 1}), "logs and metrics": ("Reports", {"n": 3}),
         "bad input": ("Typed", {"n": "x"}), "server-sent events": ("Typed", {"text": "x"})}


@pytest.mark.parametrize("case", list(CASES))
def test_a_dropped_record_is_freed_at_once_without_the_garbage_collector(case):
    """A finished record lets go of its call, its workspace, hooks and listeners, which
    referred back to it and to the request that made it: a dropped record is freed by
    reference counting alone. Before, each one was ~50 objects of cyclic garbage, freed only
    by a full collection, which the serving thresholds (gctune.py) made rare and huge (a
    3.3 s stall after ~80,000 predictions at 8 connections)."""
    import gc
    import weakref

    target, inp = CASES[case]
    sse = {"Accept": "text/event-stream"} if case == "server-sent events" else {}
    with serving(worker(target), max_records=2) as srv, srv.client() as c:
        records = srv.app.state.predictions.records
        c.post("/predictions", json={"id": "warm", "input": inp})
        gc.collect()
        gc.disable()
        try:
            refs = []
            for i in range(6):
                with c.stream("POST", "/predictions", json={"id": f"p{i}", "input": inp},
                              headers=sse) as r:
                    assert r.status_code == (422 if case == "bad input" else 200)
                    r.read()
                refs.append(weakref.ref(records[f"p{i}"]))
            alive = [ref() is not None for ref in refs]
        finally:
            gc.enable()
    assert alive == [False] * 4 + [True] * 2
