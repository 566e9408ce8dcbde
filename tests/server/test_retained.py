"""Nothing kept longer than needed, every answer valid JSON (issue 12, item 6): a large
data: URL input is a short placeholder in the record; NaN/Infinity inputs are 422 before
anything runs; a NaN output is null in every answer (sync, GET, SSE, webhook)."""

import base64
import json

from conftest import fixture_ref

from .conftest import LOCAL_HOOKS, SSE, run_server, serving, sse_events, worker
from .test_streaming_and_ops import Receiver


def files_worker(name):
    import corral

    return corral.Worker(fixture_ref(f"file_targets:{name}"))


def test_a_large_data_url_input_is_a_placeholder_in_the_record():
    data = bytes(range(256)) * 4096  # 1 MiB
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    with serving(files_worker("Info")) as srv, srv.client() as c:
        body = c.post("/predictions", json={"id": "big", "input": {"doc": url}}).json()
        assert body["status"] == "succeeded", body
        assert body["output"]["size"] == len(data)  # the model got every byte
        shown = body["input"]["doc"]
        assert shown == f"data: URL ({len(url)} characters) saved as input.png " \
                        f"({len(data)} bytes)"
        kept = srv.app.state.predictions.get("big")
        assert kept.input["doc"] == shown
        assert len(json.dumps(kept.to_json())) < 10_000
        # A small one is shown as it was sent (as Cog does).
        small = "data:text/plain;base64," + base64.b64encode(b"hi").decode()
        assert c.post("/predictions", json={"input": {"doc": small}}).json()["input"] == \
            {"doc": small}


def test_nan_and_infinity_inputs_are_422_before_anything_runs():
    with serving(worker("Floats")) as srv, srv.client() as c:
        for text in ("NaN", "Infinity", "-Infinity"):
            for path, method in (("/predictions", "POST"), ("/predictions/n1", "PUT")):
                r = c.request(method, path, content=b'{"input": {"x": %s}}' % text.encode(),
                              headers={"Content-Type": "application/json"})
                assert r.status_code == 422, (text, r.text)
                assert "not valid JSON" in r.json()["detail"][0]["msg"]
            r = c.post("/predictions", files={"input": (None, '{"x": %s}' % text,
                                                        "application/json")})
            assert r.status_code == 422, r.text
        assert srv.app.state.predictions.records == {}
        assert c.post("/predictions", json={"input": {"x": 1.5}}).json()["output"] == 1.5


def test_a_nan_output_is_null_in_every_answer():
    receiver = Receiver()
    with run_server(receiver.app) as hooks, \
            serving(worker("Floats"), **LOCAL_HOOKS) as srv, srv.client() as c:
        r = c.post("/predictions", json={"id": "nan", "input": {"nan": True}})
        assert r.status_code == 200 and r.json()["output"] is None
        r = c.get("/predictions/nan")
        assert r.status_code == 200 and json.loads(r.text)["output"] is None
        r = c.put("/predictions/nan", json={"input": {"nan": True}},
                  headers={"Prefer": "respond-async"})
        assert r.status_code == 202 and r.json()["status"] == "succeeded"
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"input": {"nan": True}}) as r:
            events = list(sse_events(r.iter_lines()))  # (json.loads each: valid JSON)
        assert events[-1][0] == "completed" and events[-1][1]["output"] is None
        c.post("/predictions", json={"input": {"nan": True}, "webhook": hooks.url + "/hook",
                                     "webhook_events_filter": ["completed"]})
        receiver.wait_for(lambda b: len(b) == 1)
        assert receiver.bodies[0]["output"] is None
