"""SSE, webhooks, auth, /metrics and /openapi.json against a real server."""

import logging
import threading

import pytest

from conftest import wait_until

from .conftest import LOCAL_HOOKS, SSE, open_gate, run_server, serving, sse_events, until, worker


def test_sse_sends_the_first_output_before_the_prediction_ends(fifo):
    with serving(worker("Gen")) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"id": "s1", "input": {"n": 3, "gate": fifo}}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.iter_lines())
            seen = until(events, "output")
            # coglet's events: output {"chunk", "index"}, log {"source", "data"}
            assert seen[-1] == ("output", {"chunk": "tok0", "index": 0})
            assert ("log", {"source": "stdout", "data": "step 0"}) in seen
            assert seen[0] == ("start", {"id": "s1", "status": "processing"})
            # the predictor is still blocked on its gate: the prediction has not ended
            assert c.get("/predictions/s1").json()["status"] == "processing"
            open_gate(fifo)
            rest = list(events)
        outputs = [d for e, d in rest if e == "output"]
        assert outputs == [{"chunk": "tok1", "index": 1}, {"chunk": "tok2", "index": 2}]
        assert rest[-1][0] == "completed"
        assert rest[-1][1]["status"] == "succeeded"
        assert rest[-1][1]["output"] == ["tok0", "tok1", "tok2"]


def test_an_error_mid_stream_ends_with_a_failed_completed_event():
    with serving(worker("Gen")) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"input": {"n": 3, "fail_at": 1}}) as r:
            events = list(sse_events(r.iter_lines()))
        assert ("output", {"chunk": "tok0", "index": 0}) in events
        assert events[-1][0] == "completed"  # as coglet: the failed record
        assert events[-1][1]["status"] == "failed"
        assert "failed at 1" in events[-1][1]["error"]


def test_a_client_that_disconnects_cancels_its_prediction(fifo):
    with serving(worker("Gen")) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"id": "gone", "input": {"n": 3, "gate": fifo}}) as r:
            until(sse_events(r.iter_lines()), "output")
        # the response is closed: the client went away
        wait_until(lambda: c.get("/predictions/gone").json()["status"] == "canceled", 30,
                   "the prediction to be canceled")


def test_a_generator_without_sse_answers_the_whole_list():
    with serving(worker("Gen")) as srv, srv.client() as c:
        body = c.post("/predictions", json={"input": {"n": 2}}).json()
        assert body["status"] == "succeeded"
        assert body["output"] == ["tok0", "tok1"]
        assert body["logs"] == "step 0\nstep 1\n"


class Receiver:
    """A webhook receiver (its own uvicorn): answers 500 to the first ``fail_first``
    requests, then records each body."""

    def __init__(self, fail_first=0):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.bodies = []
        self.tries = 0
        self.fail_first = fail_first
        self.changed = threading.Condition()

        async def hook(request):
            body = await request.json()
            with self.changed:
                self.tries += 1
                if self.tries <= self.fail_first:
                    return JSONResponse({}, status_code=500)
                self.bodies.append(body)
                self.changed.notify_all()
            return JSONResponse({})

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        self.app.state.set_shutdown = lambda hook: None

    def wait_for(self, predicate, timeout=30):
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.bodies), timeout), self.bodies


def test_webhooks_follow_an_async_prediction_and_are_retried():
    receiver = Receiver(fail_first=1)
    with run_server(receiver.app) as hooks, serving(worker("Gen"), webhook_backoff=0.01,
                                               webhook_throttle=0, **LOCAL_HOOKS) \
            as srv, srv.client() as c:
        r = c.post("/predictions", headers={"Prefer": "respond-async"},
                   json={"input": {"n": 2}, "webhook": hooks.url + "/hook"})
        assert r.status_code == 202
        receiver.wait_for(lambda b: b and b[-1]["status"] == "succeeded")
        statuses = [b["status"] for b in receiver.bodies]
        assert statuses[-1] == "succeeded"
        assert receiver.bodies[-1]["output"] == ["tok0", "tok1"]
        # the first post (start) was answered 500 and sent again
        assert receiver.tries == len(receiver.bodies) + 1
        assert receiver.bodies[0]["status"] == "processing"
        # start, output x2, logs x2, completed
        assert len(receiver.bodies) == 6


def test_webhook_events_filter_keeps_only_the_namedsse_events():
    receiver = Receiver()
    with run_server(receiver.app) as hooks, serving(worker("Gen"), **LOCAL_HOOKS) as srv, \
            srv.client() as c:
        c.post("/predictions", headers={"Prefer": "respond-async"},
               json={"id": "f1", "input": {"n": 3}, "webhook": hooks.url + "/hook",
                     "webhook_events_filter": ["completed"]})
        receiver.wait_for(lambda b: len(b) >= 1)
        wait_until(lambda: c.get("/predictions/f1").json()["status"] == "succeeded", 30,
                   "the prediction to end")
        # a second prediction's completed webhook arrives after any stray one of the first
        c.post("/predictions", headers={"Prefer": "respond-async"},
               json={"id": "f2", "input": {"n": 1}, "webhook": hooks.url + "/hook",
                     "webhook_events_filter": ["completed"]})
        receiver.wait_for(lambda b: any(x["id"] == "f2" for x in b))
        assert [(b["id"], b["status"]) for b in receiver.bodies] == \
            [("f1", "succeeded"), ("f2", "succeeded")]


def test_a_token_protects_every_route_but_health_check(caplog):
    token = "s3cret-token-value"
    caplog.set_level(logging.DEBUG)
    with serving(worker("Typed"), token=token) as srv, srv.client() as c:
        assert c.get("/health-check").status_code == 200
        for method, path in [("POST", "/predictions"), ("GET", "/metrics"),
                             ("GET", "/openapi.json"), ("POST", "/shutdown"),
                             ("POST", "/predictions/x/cancel"), ("PUT", "/predictions/x")]:
            r = c.request(method, path, json={"input": {"text": "a"}})
            assert r.status_code == 401, (method, path)
            assert r.headers["www-authenticate"] == "Bearer"
        wrong = c.post("/predictions", json={"input": {"text": "a"}},
                       headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = c.post("/predictions", json={"input": {"text": "a"}},
                    headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["output"] == "a"
    assert token not in caplog.text


def test_binding_beyond_loopback_needs_a_token_or_insecure():
    from corral.server import create_app

    with pytest.raises(ValueError, match="without a token"):
        create_app(worker("Typed"), host="0.0.0.0")
    create_app(worker("Typed"), host="0.0.0.0", insecure=True)
    create_app(worker("Typed"), host="0.0.0.0", token="t")
    for host in ("127.0.0.1", "::1", "localhost"):
        create_app(worker("Typed"), host=host)


def test_metrics_count_requests_and_report_the_runner():
    with serving(worker("Typed")) as srv, srv.client() as c:
        c.post("/predictions", json={"input": {"text": "a"}})
        c.post("/predictions", json={"input": {"text": "b"}})
        text = c.get("/metrics").text
        assert 'corral_http_requests_total{method="POST",route="/predictions",status="200"} 2.0' \
            in text
        assert "corral_http_request_duration_seconds_bucket" in text
        assert "corral_queue_depth 0.0" in text
        assert "corral_busy_slots 0.0" in text
        assert "corral_slots 1.0" in text
        assert "corral_worker_restarts_total 0.0" in text


def test_openapi_json_has_cogs_shape():
    with serving(worker("Typed")) as srv, srv.client() as c:
        doc = c.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        assert {"Input", "Output", "PredictionRequest", "PredictionResponse"} <= set(schemas)
        assert {"/predictions", "/predictions/{prediction_id}",
                "/predictions/{prediction_id}/cancel", "/health-check", "/shutdown"} <= \
            set(doc["paths"])
        # Input comes from predict()'s type hints, built in the worker.
        inputs = schemas["Input"]
        assert inputs["required"] == ["text"]
        # titled and ordered as Cog writes them
        assert inputs["properties"]["n"] == {"type": "integer", "default": 1, "title": "N",
                                             "x-order": 1}
        assert inputs["properties"]["raw"] == {"type": "boolean", "default": False,
                                               "title": "Raw", "x-order": 2}
        assert doc["paths"]["/predictions"]["post"]["responses"]["422"]["content"][
            "application/json"]["schema"] == {"$ref": "#/components/schemas/HTTPValidationError"}
