"""POST/PUT /predictions, cancel, health-check, shutdown, busy answers, outputs."""

import base64
import datetime
import threading

from conftest import wait_until

from .conftest import open_gate, pool, run_server, serving, started, worker


def _iso(text):
    return datetime.datetime.fromisoformat(text)


def test_sync_prediction_answers_with_the_cog_body():
    with serving(worker("Typed")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"text": "ab", "n": 2}})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"id", "status", "input", "output", "logs", "error", "metrics",
                             "created_at", "started_at", "completed_at"}
        assert body["status"] == "succeeded"
        assert body["output"] == "abab"
        assert body["input"] == {"text": "ab", "n": 2}
        assert "got 'ab'" in body["logs"]
        assert body["error"] is None
        assert body["metrics"]["predict_time"] >= 0
        assert _iso(body["created_at"]) <= _iso(body["started_at"]) <= \
            _iso(body["completed_at"])
        assert _iso(body["created_at"]).tzinfo is not None


def test_a_given_id_is_kept_and_outputs_that_are_not_json_are_converted():
    with serving(worker("Typed")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"id": "p1", "input": {"text": "x", "n": 3,
                                                                "raw": True}})
        body = r.json()
        assert body["id"] == "p1"
        prefix = "data:application/octet-stream;base64,"
        assert body["output"].startswith(prefix)
        assert base64.b64decode(body["output"][len(prefix):]) == b"xxx"
        r = c.post("/predictions", json={"input": {"text": "x", "n": 4, "array": True}})
        assert r.json()["output"] == [0, 1, 2, 3]


def test_a_failed_prediction_is_200_with_status_failed():
    with serving(worker("Fails")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"x": 3}})
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "failed"
        assert body["error"] == "bad x: 3"
        # The model's traceback ends the logs, as under Cog: its frame and the exception.
        assert "Traceback (most recent call last)" in body["logs"]
        assert body["logs"].rstrip().endswith("ValueError: bad x: 3")
        assert "cogish.py" in body["logs"]
        assert body["output"] is None
        assert body["completed_at"] is not None
        # the worker is still usable
        assert c.post("/predictions", json={"input": {"x": 4}}).json()["status"] == "failed"


def test_arguments_that_do_not_fit_are_422():
    with serving(worker("Typed")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"text": "a", "bogus": 1}})
        assert r.status_code == 422
        assert r.json()["detail"] == [{"loc": ["body", "input", "bogus"],
                                       "msg": "unexpected input", "type": "value_error"}]
        # Every bad field at once, each with where it is.
        r = c.post("/predictions", json={"input": {"n": "many", "raw": "maybe"}})
        assert r.status_code == 422
        assert {tuple(p["loc"]) for p in r.json()["detail"]} == {
            ("body", "input", "text"), ("body", "input", "n"), ("body", "input", "raw")}
        # JSON strings convert where the hints say so.
        r = c.post("/predictions", json={"input": {"text": "ab", "n": "2"}})
        assert r.json()["output"] == "abab"
        assert c.post("/predictions", json={"input": [1]}).status_code == 422
        for bad in (3, ["http://x"], "ftp://x", "not a url"):
            r = c.post("/predictions", json={"input": {"text": "a"}, "webhook": bad})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "webhook"]
        assert c.post("/predictions", content=b"{nope").status_code == 422


def test_a_body_nested_too_deeply_for_the_json_decoder_is_422_not_500():
    with serving(worker("Typed")) as srv, srv.client() as c:
        for body in (b"[" * 100_000 + b"]" * 100_000,
                     b'{"input": {"text": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000
                     + b"}}"):
            r = c.post("/predictions", content=body)
            assert r.status_code == 422
            assert r.json()["detail"][0]["msg"] == "the body is nested too deeply"
            assert c.put("/predictions/deep", content=body).status_code == 422
        # Deep enough to decode, too deep to convert for the worker.
        deep = b'{"input": {"text": "a", "x": ' + b'{"a": ' * 900 + b"1" + b"}" * 902
        r = c.post("/predictions", content=deep)
        assert r.status_code == 422, r.text
        assert "nested too deeply" in r.json()["detail"][0]["msg"]


def test_an_id_that_is_not_a_string_is_422_not_500():
    with serving(worker("Typed")) as srv, srv.client() as c:
        for pid in ([1], {"a": 1}, 5, True):
            r = c.post("/predictions", json={"id": pid, "input": {"text": "a"}})
            assert r.status_code == 422, (pid, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "id"]


def test_put_with_one_id_twice_runs_the_prediction_once(tmp_path, fifo):
    side = str(tmp_path / "side")
    inp = {"side": side, "fifo": fifo}
    with serving(worker("Gated")) as srv, srv.client() as c:
        async_ = {"Prefer": "respond-async"}
        r1 = c.put("/predictions/same", json={"input": inp}, headers=async_)
        assert r1.status_code == 202
        wait_until(lambda: started(side) == 1, 30, "the prediction to start")
        r2 = c.put("/predictions/same", json={"input": inp}, headers=async_)
        assert r2.status_code == 202
        assert r2.json()["created_at"] == r1.json()["created_at"]
        answers = []
        t = threading.Thread(target=lambda: answers.append(
            c.put("/predictions/same", json={"input": inp})))
        t.start()
        open_gate(fifo, "once")
        t.join(30)
        assert answers[0].status_code == 200
        assert answers[0].json()["output"] == "opened:once"
        assert answers[0].json()["id"] == "same"
        assert started(side) == 1


def test_cancel_stops_a_running_prediction(tmp_path, fifo):
    side = str(tmp_path / "side")
    with serving(worker("Gated")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"id": "c1", "input": {"side": side, "fifo": fifo}},
                   headers={"Prefer": "respond-async"})
        assert r.status_code == 202
        assert r.json()["status"] in ("starting", "processing")
        wait_until(lambda: started(side) == 1, 30, "the prediction to start")
        assert c.get("/health-check").json()["status"] == "BUSY"
        assert c.post("/predictions/c1/cancel").status_code == 200
        wait_until(lambda: c.get("/predictions/c1").json()["status"] == "canceled", 30,
                   "the prediction to be canceled")
        assert c.post("/predictions/nope/cancel").status_code == 404
        # the worker takes the next prediction
        wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 30,
                   "the slot to be free")


def test_health_check_reports_ready_and_setup_failed():
    with serving(worker("Typed")) as srv, srv.client() as c:
        body = c.get("/health-check").json()
        assert body["status"] == "READY"
        assert body["setup"]["status"] == "succeeded"
    import corral
    from conftest import fixture_ref

    broken = corral.Worker(fixture_ref("broken_setup:BrokenSetup"))
    with serving(broken) as srv, srv.client() as c:
        body = c.get("/health-check").json()
        assert body["status"] == "SETUP_FAILED"
        assert "in setup" in body["setup"]["logs"]
        assert c.post("/predictions", json={"input": {}}).status_code == 503


def test_a_full_queue_answers_429_and_never_409(tmp_path, fifo):
    side = str(tmp_path / "side")
    inp = {"side": side, "fifo": fifo}
    # 1 slot + 1 prefetched + 1 in the pool's queue: the fourth is refused
    runner = pool("Gated", workers=1, slots=1, prefetch=1, max_queue=1)
    with serving(runner) as srv, srv.client() as c:
        codes = [c.post("/predictions", json={"input": inp},
                        headers={"Prefer": "respond-async"}) for _ in range(4)]
        assert [r.status_code for r in codes] == [202, 202, 202, 429]
        assert codes[3].headers["Retry-After"] == "1"
        for i in range(3):
            wait_until(lambda: started(side) == i + 1, 30, "the next prediction to start")
            open_gate(fifo, str(i))
        ids = [r.json()["id"] for r in codes[:3]]
        wait_until(lambda: all(c.get(f"/predictions/{i}").json()["status"] == "succeeded"
                               for i in ids), 30, "every accepted prediction to succeed")
        outputs = sorted(c.get(f"/predictions/{i}").json()["output"] for i in ids)
        assert outputs == ["opened:0", "opened:1", "opened:2"]


def test_sync_predictions_beyond_the_slots_wait_in_the_queue(tmp_path, fifo):
    side = str(tmp_path / "side")
    runner = pool("Gated", workers=1, slots=1, prefetch=0, max_queue=10)
    with serving(runner) as srv:
        answers = []

        def call():
            with srv.client() as c:
                answers.append(c.post("/predictions",
                                      json={"input": {"side": side, "fifo": fifo}}))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(3):
            wait_until(lambda: started(side) == i + 1, 30, "the next prediction to start")
            open_gate(fifo, str(i))
        for t in threads:
            t.join(30)
        assert sorted(r.status_code for r in answers) == [200, 200, 200]
        assert sorted(r.json()["output"] for r in answers) == \
            ["opened:0", "opened:1", "opened:2"]


def test_post_shutdown_stops_the_server():
    from corral.server import create_app

    app = create_app(worker("Typed"), allow_shutdown=True)
    with run_server(app) as srv, srv.client() as c:
        wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 60, "ready")
        assert c.post("/shutdown").status_code == 200
        srv.thread.join(30)
        assert not srv.thread.is_alive()
