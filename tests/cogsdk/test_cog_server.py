"""Cog predictors behind `corral serve`'s HTTP API, with the real cog SDK in the worker's
environment: the schema Cog would publish, outputs, 422s, coglet's SSE events, cancel,
concurrency, context, secrets and /trainings."""

import base64
import os
import threading

import pytest

import corral
from conftest import wait_until
from server.conftest import SSE, serving, sse_events

from .conftest import ref


@pytest.fixture
def served(cog_env):
    """``with served("inputs:Predictor", slots=1) as (srv, client):``"""
    import contextlib

    @contextlib.contextmanager
    def make(name, train_mode=False, **kw):
        w = corral.Worker(ref(name), python=cog_env.python, env=cog_env.worker_env, **kw)
        with serving(w, train_mode=train_mode) as srv, srv.client() as c:
            yield srv, c
    return make


def test_openapi_is_shaped_as_cog_builds_it(served):
    with served("inputs:Predictor") as (srv, c):
        doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    inputs = schemas["Input"]
    assert inputs["required"] == ["prompt", "seed"]
    assert inputs["properties"]["mode"] == {"allOf": [{"$ref": "#/components/schemas/mode"}],
                                            "default": "fast", "x-order": 3}
    assert schemas["mode"] == {"title": "mode", "description": "An enumeration.",
                               "enum": ["fast", "slow"], "type": "string"}
    assert inputs["properties"]["steps"]["minimum"] == 1
    assert schemas["Output"] == {"title": "Output", "type": "string"}
    assert {"HTTPValidationError", "ValidationError", "PredictionRequest"} <= set(schemas)
    assert "/trainings" not in doc["paths"]


def test_streaming_output_is_marked_and_sent_as_coglet_events(served):
    with served("streaming:Predictor") as (srv, c):
        doc = c.get("/openapi.json").json()
        assert doc["components"]["schemas"]["Output"] == {
            "title": "Output", "type": "array", "items": {"type": "string"},
            "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"}
        assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"id": "p1", "input": {"n": 2}}) as r:
            events = list(sse_events(r.iter_lines()))
    assert events[0] == ("start", {"id": "p1", "status": "processing"})
    assert [d for e, d in events if e == "output"] == [{"chunk": "tok0 ", "index": 0},
                                                       {"chunk": "tok1 ", "index": 1}]
    assert ("log", {"source": "stdout", "data": "token 0"}) in events
    assert events[-1][0] == "completed" and events[-1][1]["output"] == ["tok0 ", "tok1 "]


def test_valid_and_invalid_requests(served):
    with served("inputs:Predictor") as (srv, c):
        r = c.post("/predictions", json={"input": {"prompt": "cat", "seed": 3, "junk": 1}})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == "cat|4|7.5|fast|ab|False|3"
        r = c.post("/predictions", json={"input": {"steps": 99, "mode": "x"}})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert {tuple(p["loc"]) for p in detail} == {
            ("body", "input", "prompt"), ("body", "input", "seed"),
            ("body", "input", "steps"), ("body", "input", "mode")}
        missing = [p for p in detail if p["loc"][-1] == "prompt"]
        assert missing == [{"loc": ["body", "input", "prompt"], "msg": "Field required",
                            "type": "value_error.missing"}]  # word for word as coglet


def test_a_failed_prediction_reports_the_error_text(served):
    with served("streaming:Failing") as (srv, c):
        body = c.post("/predictions", json={"input": {"at": 1}}).json()
    assert body["status"] == "failed" and body["error"] == "broke at 1"
    assert body["output"] == ["0"] and "predict_time" in body["metrics"]


def test_metrics_and_context_reach_the_record(served):
    with served("runner:Runner") as (srv, c):
        body = c.post("/predictions", json={"input": {"name": "al"},
                                            "context": {"user": "kim"}}).json()
        assert body["output"] == "hi al for kim"
        assert body["metrics"]["calls"] == 1 and body["metrics"]["name_length"] == 2
        assert body["metrics"]["seen"] == ["al"] and "temp" not in body["metrics"]
        r = c.post("/predictions", json={"input": {"name": "al"}, "context": {"n": 1}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "context"]


def test_secrets_are_masked_in_the_record(served):
    with served("secret:Predictor") as (srv, c):
        body = c.post("/predictions", json={"id": "s", "input": {"token": "qwz"}}).json()
        assert body["output"] == "Secret:3:zwq:True"
        assert body["input"] == {"token": "**********"}
        assert "qwz" not in c.get("/predictions/s").text  # not hex, unlike ids


def test_file_outputs_in_a_basemodel_come_back_as_data_urls(served, tmp_path):
    image = "data:application/octet-stream;base64," + base64.b64encode(b"xyz").decode()
    with served("files:Predictor") as (srv, c):
        body = c.post("/predictions", json={"input": {"image": image}}).json()
    assert body["status"] == "succeeded", body
    assert body["output"]["text"] == "Path:3"
    assert body["output"]["image"].startswith("data:")
    assert base64.b64decode(body["output"]["image"].split(",", 1)[1]) == b"zyx"


def test_cancel_over_http(served, tmp_path):
    marker = tmp_path / "m"
    with served("cancel:Predictor") as (srv, c):
        r = c.post("/predictions", headers={"Prefer": "respond-async"},
                   json={"id": "c1", "input": {"marker": str(marker)}})
        assert r.status_code == 202
        wait_until(lambda: marker.exists() and "started" in marker.read_text(), 30,
                   "the prediction to start")
        assert c.post("/predictions/c1/cancel").status_code == 200
        wait_until(lambda: c.get("/predictions/c1").json()["status"] == "canceled", 30,
                   "the prediction to be canceled")
    assert marker.read_text() == "started\ncancelled\n"


def test_concurrent_predictions_share_the_slots(served, tmp_path):
    with served("concurrency:Predictor", slots=4) as (srv, c):
        answers = {}

        def post(i):
            answers[i] = c.post("/predictions", json={"input": {"gate": str(tmp_path), "i": i}})
        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len([n for n in os.listdir(tmp_path) if n.startswith("in-")]) == 4,
                   30, "four predictions at once")
        (tmp_path / "open").touch()
        for t in threads:
            t.join(30)
    assert sorted(a.json()["output"] for a in answers.values()) == [0, 1, 2, 3]


def test_trainings_api(served):
    with served("train:train", train_mode=True) as (srv, c):
        doc = c.get("/openapi.json").json()
        assert doc["components"]["schemas"]["TrainingInput"]["required"] == ["n"]
        assert {"/trainings", "/trainings/{training_id}/cancel"} <= set(doc["paths"])
        body = c.post("/trainings", json={"input": {"n": 5}}).json()
        assert body["status"] == "succeeded", body
        assert body["output"]["steps"] == 5 and body["output"]["weights"].startswith("data:")
        assert "trained 5" in body["logs"]
        r = c.put("/trainings/t1", json={"input": {"n": 2}})
        again = c.put("/trainings/t1", json={"input": {"n": 3}})
        assert r.json()["output"]["steps"] == 2 and again.status_code == 202
        assert again.json()["output"]["steps"] == 2  # idempotent: not run twice
        assert c.get("/trainings/t1").json()["status"] == "succeeded"
        assert c.post("/trainings", json={"input": {"n": 0}}).status_code == 422
        assert c.get("/trainings/nope").status_code == 404


def test_trainings_are_404_for_a_model_without_train(served):
    with served("inputs:Predictor") as (srv, c):
        assert c.post("/trainings", json={"input": {}}).status_code == 404


def test_a_training_with_a_webhook_and_respond_async(cog_env):
    from server.conftest import LOCAL_HOOKS, run_server
    from server.test_streaming_and_ops import Receiver

    receiver = Receiver()
    w = corral.Worker(ref("train:train"), python=cog_env.python, env=cog_env.worker_env)
    with run_server(receiver.app) as hooks, \
            serving(w, train_mode=True, **LOCAL_HOOKS) as srv, \
            srv.client() as c:
        r = c.put("/trainings/w1", headers={"Prefer": "respond-async"},
                  json={"input": {"n": 2}, "webhook": hooks.url + "/hook",
                        "webhook_events_filter": ["completed"]})
        assert r.status_code == 202 and r.json()["id"] == "w1"
        receiver.wait_for(lambda b: b and b[-1]["status"] == "succeeded")
        assert receiver.bodies[-1]["output"]["steps"] == 2
        assert c.get("/trainings/w1").json()["status"] == "succeeded"


def test_a_basemodel_output_is_an_inline_object_in_the_schema(served):
    with served("files:Predictor") as (srv, c):
        out = c.get("/openapi.json").json()["components"]["schemas"]["Output"]
    assert out["type"] == "object" and out["title"] == "Output"
    assert out["properties"]["image"] == {"type": "string", "format": "uri", "title": "Image"}
    assert out["properties"]["extra"]["nullable"] is True
    assert out["required"] == ["text", "image"]


def test_streamed_path_outputs_and_setup_weights(cog_env):
    w = corral.Worker(ref("streaming:Frames"), python=cog_env.python,
                      env={**cog_env.worker_env, "COG_WEIGHTS": "w.bin"})
    with serving(w) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", headers=SSE, json={"input": {"n": 2}}) as r:
            chunks = [d["chunk"] for e, d in sse_events(r.iter_lines()) if e == "output"]
    assert [base64.b64decode(x.split(",", 1)[1]) for x in chunks] == [
        b"frame 0 of w.bin", b"frame 1 of w.bin"]
