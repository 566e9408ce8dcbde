"""The server drives any Runner unchanged (issue 13): here FakeRunner, threads of this
process instead of a worker. Remote and Ray workers plug in the same way."""

import corral
from corral.host.caller import Runner
from fakes import FakeRunner

from .conftest import serving


class Model:
    def predict(self, text: str) -> str:
        return text.upper()


class Streamer:
    def predict(self, n: int):
        for i in range(n):
            yield i


def test_the_server_serves_a_fake_runner():
    runner = FakeRunner(Model)
    assert isinstance(runner, Runner)
    with serving(runner) as s, s.client() as c:
        assert c.get("/health-check").json()["status"] == "READY"
        r = c.post("/predictions", json={"input": {"text": "hi"}})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded" and r.json()["output"] == "HI"
        assert "corral_slots 1.0" in c.get("/metrics").text


def test_the_server_streams_from_a_fake_runner():
    with serving(FakeRunner(Streamer)) as s, s.client() as c:
        r = c.post("/predictions", json={"input": {"n": 3}})
        assert r.json()["status"] == "succeeded", r.json()
        assert r.json()["output"] == [0, 1, 2]


def test_a_pool_of_fake_runners_behind_the_server():
    pool = corral.Pool(Model, workers=2, runner=FakeRunner)
    with serving(pool) as s, s.client() as c:
        outs = [c.post("/predictions", json={"input": {"text": t}}).json()["output"]
                for t in ("a", "b", "c")]
        assert outs == ["A", "B", "C"]
