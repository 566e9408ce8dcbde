"""Graceful shutdown: POST /shutdown, SIGTERM and the lifespan shutdown drain the
predictions in flight, answer new ones 503 meanwhile, then stop the workers."""

import os
import signal
import subprocess
import sys
import threading

from conftest import fixture_ref, wait_until

from .conftest import open_gate, run_server, serving, started, worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _post_in_thread(client, answers, **kw):
    t = threading.Thread(target=lambda: answers.append(client.post("/predictions", **kw)))
    t.start()
    return t


def test_post_shutdown_drains_in_flight_predictions_and_refuses_new_ones(tmp_path, fifo):
    side = str(tmp_path / "side")
    runner = worker("Gated")
    with serving(runner, drain_grace=30, allow_shutdown=True) as srv, srv.client() as c, srv.client() as c2:
        answers = []
        t = _post_in_thread(c2, answers, json={"id": "inflight",
                                               "input": {"side": side, "fifo": fifo}})
        wait_until(lambda: started(side) == 1, 30, "the prediction to start")
        assert c.post("/shutdown").status_code == 200
        refused = c.post("/predictions", json={"input": {"side": side, "fifo": fifo}})
        assert refused.status_code == 503
        assert "shutting down" in refused.json()["detail"]
        # still serving the rest while it drains
        assert c.get("/predictions/inflight").json()["status"] == "processing"
        assert srv.thread.is_alive()
        open_gate(fifo, "late")
        t.join(30)
        assert answers[0].status_code == 200
        assert answers[0].json()["status"] == "succeeded"
        assert answers[0].json()["output"] == "opened:late"
        srv.thread.join(30)
        assert not srv.thread.is_alive()
    assert runner.state == "stopped"
    assert started(side) == 1  # the refused one never ran


def test_the_lifespan_shutdown_waits_for_async_predictions(tmp_path, fifo):
    from corral.server import create_app

    side = str(tmp_path / "side")
    runner = worker("Gated")
    app = create_app(runner, drain_grace=30)
    with run_server(app) as srv, srv.client() as c:
        wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 60, "ready")
        r = c.post("/predictions", json={"id": "bg", "input": {"side": side, "fifo": fifo}},
                   headers={"Prefer": "respond-async"})
        assert r.status_code == 202
        wait_until(lambda: started(side) == 1, 30, "the prediction to start")
        srv.server.should_exit = True  # what uvicorn does on SIGTERM, without the app's say
        wait_until(lambda: app.state.drain.draining, 30, "the lifespan shutdown to drain")
        assert srv.thread.is_alive()
        open_gate(fifo, "bg")
        srv.thread.join(30)
        assert not srv.thread.is_alive()
    pred = app.state.predictions.get("bg")
    assert pred.status == "succeeded" and pred.output == "opened:bg"
    assert runner.state == "stopped"


def test_predictions_still_running_after_the_grace_are_canceled(tmp_path, fifo):
    side = str(tmp_path / "side")
    runner = worker("Gated")
    with serving(runner, drain_grace=0.5, allow_shutdown=True) as srv, srv.client() as c:
        r = c.post("/predictions", json={"id": "slow", "input": {"side": side, "fifo": fifo}},
                   headers={"Prefer": "respond-async"})
        assert r.status_code == 202
        wait_until(lambda: started(side) == 1, 30, "the prediction to start")
        assert c.post("/shutdown").status_code == 200
        srv.thread.join(30)  # the gate is never opened
        assert not srv.thread.is_alive()
    assert srv.app.state.predictions.get("slow").status == "canceled"
    assert runner.state == "stopped"


SERVE = """
import sys
import corral
from corral.server import serve
serve(corral.Worker(sys.argv[1]), port=0, token="sigterm-token-xyz", drain_grace=30)
"""


def test_sigterm_drains_then_exits(tmp_path, fifo):
    import httpx

    side = str(tmp_path / "side")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    env.pop("CORRAL_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-c", SERVE, fixture_ref("cogish:Gated")],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        url = line.split("Uvicorn running on ")[1].split()[0]
        auth = {"Authorization": "Bearer sigterm-token-xyz"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as c, \
                httpx.Client(base_url=url, headers=auth, timeout=30) as c2:
            wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 60,
                       "ready")
            answers = []
            t = _post_in_thread(c2, answers, json={"id": "t1",
                                                   "input": {"side": side, "fifo": fifo}})
            wait_until(lambda: started(side) == 1, 30, "the prediction to start")
            proc.send_signal(signal.SIGTERM)
            # (a body refused before it reaches the worker: 422 until the drain begins)
            wait_until(lambda: c.post("/predictions", json={"input": [1]}).status_code == 503,
                       30, "new predictions to be refused")
            open_gate(fifo, "term")
            t.join(30)
            assert answers[0].status_code == 200
            assert answers[0].json()["status"] == "succeeded"
        proc.wait(30)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines.append(rest)
    text = "".join(lines)
    assert proc.returncode in (0, -signal.SIGTERM), text
    # the access log: JSON lines, never the token
    assert '"path":"/predictions","status":200' in text and '"prediction_id":"t1"' in text
    assert "sigterm-token-xyz" not in text
