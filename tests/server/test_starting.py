"""A prediction waiting in a full Pool's queue is "starting" (Cog's word) until the pool
sends it to a worker; then "processing", with its start webhook at that moment."""

from conftest import wait_until

from .conftest import LOCAL_HOOKS, open_gate, pool, run_server, serving, started
from .test_streaming_and_ops import Receiver


def test_a_queued_prediction_is_starting_until_a_worker_takes_it(tmp_path, fifo):
    side = str(tmp_path / "side")
    receiver = Receiver()
    runner = pool("Gated", workers=1, slots=1, prefetch=0, max_queue=10)
    inp = {"side": side, "fifo": fifo}
    with run_server(receiver.app) as hooks, serving(runner, webhook_backoff=0.01, **LOCAL_HOOKS) as srv, \
            srv.client() as c:
        async_ = {"Prefer": "respond-async"}
        assert c.post("/predictions", json={"id": "a", "input": inp},
                      headers=async_).json()["status"] == "processing"
        wait_until(lambda: started(side) == 1, 30, "a to start")
        r = c.post("/predictions", headers=async_,
                   json={"id": "b", "input": inp, "webhook": hooks.url + "/hook",
                         "webhook_events_filter": ["start", "completed"]})
        assert r.status_code == 202
        assert r.json()["status"] == "starting" and r.json()["started_at"] is None
        b = c.get("/predictions/b").json()
        assert b["status"] == "starting" and b["started_at"] is None
        assert receiver.bodies == []  # no start webhook while queued
        open_gate(fifo, "a")
        wait_until(lambda: started(side) == 2, 30, "b to start")
        receiver.wait_for(lambda bodies: len(bodies) == 1)
        assert receiver.bodies[0]["id"] == "b"
        assert receiver.bodies[0]["status"] == "processing"
        assert receiver.bodies[0]["started_at"] is not None
        assert c.get("/predictions/b").json()["status"] == "processing"
        open_gate(fifo, "b")
        receiver.wait_for(lambda bodies: len(bodies) == 2)
        done = receiver.bodies[1]
        assert done["status"] == "succeeded" and done["output"] == "opened:b"
        assert done["created_at"] < done["started_at"] <= done["completed_at"]


def test_a_prediction_cancelled_in_the_queue_never_starts(tmp_path, fifo):
    side = str(tmp_path / "side")
    runner = pool("Gated", workers=1, slots=1, prefetch=0, max_queue=10)
    inp = {"side": side, "fifo": fifo}
    with serving(runner) as srv, srv.client() as c:
        async_ = {"Prefer": "respond-async"}
        c.post("/predictions", json={"id": "a", "input": inp}, headers=async_)
        wait_until(lambda: started(side) == 1, 30, "a to start")
        assert c.post("/predictions", json={"id": "b", "input": inp},
                      headers=async_).json()["status"] == "starting"
        assert c.post("/predictions/b/cancel").status_code == 200
        wait_until(lambda: c.get("/predictions/b").json()["status"] == "canceled", 30,
                   "b to be canceled")
        open_gate(fifo, "a")
        wait_until(lambda: c.get("/predictions/a").json()["status"] == "succeeded", 30,
                   "a to finish")
        assert started(side) == 1  # b never reached the worker
