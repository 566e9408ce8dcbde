"""Logs cost linear time and bounded memory through the server (issue 12, item 2): each
prediction keeps its newest ``max_log_bytes`` with a marker for the rest, and webhooks
are coalesced (latest state wins, bounded queue) instead of one snapshot per line."""

import re
import threading

from .conftest import LOCAL_HOOKS, run_server, serving, worker
from .test_streaming_and_ops import Receiver

MARKER = re.compile(r"^\[corral: (\d+) bytes \((\d+) lines\) of older log output dropped; "
                    r"the last (\d+) kept\]\n")


def test_a_predictions_logs_keep_the_newest_bytes_and_say_how_many_went():
    n, width = 20_000, 30  # 620 kB of log text (with the newlines)
    with serving(worker("Chatty"), max_log_bytes=50_000) as srv, srv.client() as c:
        body = c.post("/predictions", json={"input": {"n": n, "width": width}}).json()
        assert body["status"] == "succeeded"
        logs = body["logs"]
        match = MARKER.match(logs)
        assert match, logs[:200]
        dropped, lines, cap = map(int, match.groups())
        kept = logs[match.end():].splitlines(keepends=True)
        assert cap == 50_000 and sum(map(len, kept)) <= 50_000
        assert dropped == n * (width + 1) - sum(map(len, kept))
        assert lines == n - len(kept)
        assert kept[-1] == f"{n - 1:08d}" + "x" * (width - 8) + "\n"
        # GET answers the same record
        assert c.get(f"/predictions/{body['id']}").json()["logs"] == logs
        small = c.post("/predictions", json={"input": {"n": 3}}).json()["logs"]
        assert not MARKER.match(small) and len(small.splitlines()) == 3


def test_a_logs_webhook_sends_the_latest_state_not_a_snapshot_per_line():
    """With a long throttle, only start and completed go out for 3,000 lines; the
    completed body holds every line."""
    receiver = Receiver()
    with run_server(receiver.app) as hooks, serving(worker("Chatty"), webhook_throttle=60,
                                                    **LOCAL_HOOKS) as srv, srv.client() as c:
        r = c.post("/predictions", headers={"Prefer": "respond-async"},
                   json={"input": {"n": 3000}, "webhook": hooks.url + "/hook"})
        assert r.status_code == 202
        receiver.wait_for(lambda b: b and b[-1]["status"] == "succeeded")
        assert [b["status"] for b in receiver.bodies] == ["processing", "succeeded"]
        assert len(receiver.bodies[-1]["logs"].splitlines()) == 3000
    # Only logs asked for: the first update at once, then one when the prediction ends.
    receiver = Receiver()
    with run_server(receiver.app) as hooks, serving(worker("Chatty"), webhook_throttle=60,
                                                    **LOCAL_HOOKS) as srv, srv.client() as c:
        c.post("/predictions", headers={"Prefer": "respond-async"},
               json={"input": {"n": 3000}, "webhook": hooks.url + "/hook",
                     "webhook_events_filter": ["logs"]})
        receiver.wait_for(lambda b: b and b[-1]["status"] == "succeeded")
        assert len(receiver.bodies) <= 2
        assert len(receiver.bodies[-1]["logs"].splitlines()) == 3000


def test_a_slow_receiver_gets_a_bounded_number_of_bodies_the_last_one_whole():
    """No throttle, and a receiver that holds the first POST until the prediction is over:
    what waits meanwhile is at most max_pending bodies, then the latest state."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from corral.server.webhooks import DEFAULT_MAX_PENDING

    release = threading.Event()
    bodies = []
    got = threading.Condition()

    async def hook(request):
        import asyncio

        body = await request.json()
        if not bodies:  # hold the first one
            while not release.is_set():
                await asyncio.sleep(0.01)
        with got:
            bodies.append(body)
            got.notify_all()
        return JSONResponse({})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    app.state.set_shutdown = lambda h: None
    with run_server(app) as hooks, serving(worker("Chatty"), webhook_throttle=0,
                                           **LOCAL_HOOKS) as srv, srv.client() as c:
        pid = c.post("/predictions", headers={"Prefer": "respond-async"},
                     json={"input": {"n": 3000}, "webhook": hooks.url + "/hook"}).json()["id"]
        from conftest import wait_until

        wait_until(lambda: c.get(f"/predictions/{pid}").json()["status"] == "succeeded", 60,
                   "the prediction to end")
        release.set()
        with got:
            assert got.wait_for(lambda: bodies and bodies[-1]["status"] == "succeeded", 30)
        assert len(bodies) <= DEFAULT_MAX_PENDING + 3, len(bodies)
        assert len(bodies[-1]["logs"].splitlines()) == 3000
