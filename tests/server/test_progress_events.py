"""SSE ``progress`` and ``metric`` events from ``corral.current().progress()/.metric()``."""

from .conftest import SSE, open_gate, serving, sse_events, until, worker


def test_progress_and_metric_events_arrive_as_they_happen(fifo):
    with serving(worker("Reports")) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", headers=SSE,
                      json={"id": "r1", "input": {"n": 3, "gate": fifo}}) as r:
            events = sse_events(r.iter_lines())
            seen = until(events, "output")
            # before the first token: its progress and metric, while the call still runs
            assert ("progress", {"step": 1.0, "total": 3.0, "phase": "tokens"}) in seen
            assert ("metric", {"name": "tokens", "value": 1, "mode": "increment"}) in seen
            assert c.get("/predictions/r1").json()["status"] == "processing"
            open_gate(fifo)
            rest = list(events)
        steps = [d["step"] for e, d in seen + rest if e == "progress"]
        assert steps == [1.0, 2.0, 3.0]
        assert [e for e, _ in rest if e == "metric"] == ["metric", "metric"]
        assert rest[-1][0] == "completed"
        assert rest[-1][1]["output"] == ["tok0", "tok1", "tok2"]
        assert rest[-1][1]["metrics"]["tokens"] == 3
