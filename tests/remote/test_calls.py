"""A remote worker answers like a local one: values, streams, events, errors, cancel,
crashes, async twins; over a real ``corral host`` on 127.0.0.1."""

import asyncio
import os
import sys
import time

import numpy as np
import pytest

import corral
from conftest import wait_until
from corral.exceptions import (
    ArgumentError,
    CallTimeout,
    Cancelled,
    MethodNotFound,
    RemoteError,
    WorkerCrashed,
)
from remote.conftest import gone, with_keeper


def test_call_returns_exact_values(model):
    value = {"t": (1, 2), "s": {3}, "big": 2**80, "b": b"x" * 10, "nested": [1.5, None]}
    assert model.call("echo", value) == value
    assert model.call("add", 2, 3) == 5
    assert model.predict is not None


def test_config_reaches_setup(session, program):
    with session.launch(program, target="remote_model.py:Model", config={"scale": 10}) as w:
        assert w.call("add", 1, 2) == 30


def test_stream_yields_each_chunk_in_order(model):
    assert list(model.stream("count", 200)) == list(range(200))
    assert model.call("count", 3) == [0, 1, 2]  # a stream called for one result


def test_watch_gives_logs_progress_and_metrics_in_order(model):
    events = list(model.watch("chatty", 3))
    logs = [e.text for e in events if isinstance(e, corral.Log)]
    assert logs == ["line 0", "line 1", "line 2"]
    assert [e.step for e in events if isinstance(e, corral.Progress)] == [1, 2, 3]
    assert isinstance(events[-1], corral.Done) and events[-1].value == 3
    fut = model.submit("chatty", 2)
    assert fut.result(30) == 2 and fut.logs == ["line 0", "line 1"]
    assert fut.metrics == {"lines": 2}
    seen = []
    assert model.options(on_event=seen.append).call("chatty", 1) == 1
    assert [type(e) for e in seen] == [corral.Log, corral.Progress, corral.Metric]


def test_errors_are_the_local_ones(model):
    with pytest.raises(ValueError) as info:
        model.call("fail", "boom")
    assert isinstance(info.value, RemoteError)
    assert info.value.type_name == "builtins.ValueError"
    assert "raise ValueError" in info.value.remote_traceback
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(MethodNotFound):
        model.call("nope")
    with pytest.raises(ArgumentError) as bad:
        model.options(convert=True).call("count", n="many")
    assert bad.value.problems and bad.value.problems[0]["loc"] == ["n"]
    with pytest.raises(TypeError, match=r"args\[0\]"):
        model.call("echo", object())  # never pickled


def test_cancel_stops_a_busy_loop_and_the_worker_goes_on(model):
    fut = model.submit("busy")
    wait_until(lambda: model.stats().busy == 1, 30, "the busy call to run")
    assert fut.cancel()
    with pytest.raises(Cancelled):
        fut.result(5)
    assert model.call("add", 1, 1) == 2  # the worker took calls again (restarted if need be)


def test_timeout_raises_call_timeout(model):
    with pytest.raises(CallTimeout):
        model.options(timeout=0.2).call("nap", 30)
    assert model.call("echo", 1) == 1


def test_a_crash_restarts_there_and_raises_worker_crashed_here(model):
    pid = model.call("pid")
    with pytest.raises(WorkerCrashed) as info:
        model.call("crash")
    assert info.value.pid == pid and info.value.signal_name == "SIGKILL"
    assert model.call("add", 2, 2) == 4  # restarted on the server
    assert model.call("pid") != pid
    assert model.health().restarts == 1


def test_map_starmap_and_introspection(model):
    assert list(model.map("add", range(20), range(20))) == [2 * i for i in range(20)]
    assert list(model.starmap("add", [(1, 2), (3, 4)])) == [3, 7]
    assert model.health().status == "ready"
    assert model.stats().calls_served >= 2
    schemas = model.describe()
    assert "count" in schemas and schemas["count"].input["properties"]["n"]["type"] == "integer"
    assert model.set_state({"k": 1}) is True and model.get_state() == {"k": 1}
    model.reload({"scale": 3})
    assert model.call("add", 1, 1) == 6


def test_async_twins(host, program):
    async def main():
        s = await corral.aconnect(host.url, token=host.token)
        async with s:
            w = await s.launch(program, target="remote_model.py:Model")
            assert await w.acall("add", 1, 2) == 3
            assert [x async for x in w.astream("count", 4)] == [0, 1, 2, 3]
            assert await w.asubmit("echo", "x") == "x"
            events = [e async for e in w.awatch("chatty", 1)]
            assert isinstance(events[-1], corral.Done)
            task = asyncio.ensure_future(w.acall("busy"))
            await asyncio.sleep(0)  # let it be sent
            wait = time.monotonic()
            while w.stats().busy == 0 and time.monotonic() - wait < 30:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await w.acall("add", 2, 2) == 4
    asyncio.run(main())


def test_100mb_array_both_ways(model):
    a = np.random.default_rng(0).standard_normal(100 * 2**20 // 8)
    b = model.call("echo", a)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
    f = np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))
    g = model.call("echo", f)
    assert np.array_equal(f, g) and g.flags.f_contiguous
    blob = bytes(range(256)) * 4096
    assert model.call("echo", [blob, bytearray(blob)]) == [blob, bytearray(blob)]


def test_stop_ends_the_processes_even_in_a_busy_loop(session, program):
    w = session.launch(program, target="remote_model.py:Model")
    pids = with_keeper(w.pid)
    w.submit("busy")
    wait_until(lambda: w.stats().busy == 1, 30, "the busy call to run")
    w.stop(grace=0.5)
    wait_until(lambda: all(map(gone, pids)), 10, "the worker and its keeper to end")
    with pytest.raises(corral.InvalidState):
        w.call("noop")


def test_pool_instance(session, program):
    with session.launch(program, target="remote_model.py:Model", workers=2) as w:
        assert len(w.pids) == 2
        futs = [w.submit("nap", 0.2) for _ in range(4)]
        assert [f.result(30) for f in futs] == [0.2] * 4
        assert len(w.stats().workers) == 2


def test_a_local_pool_spreads_its_calls_over_remote_instances(session, program):
    # One slot each and no prefetch: two calls at once must go to both instances.
    pool = corral.Pool("remote_model.py:Model", workers=2, slots=1, prefetch=0,
                       runner=session.runner(program))
    with pool:
        remote = pool.workers
        assert len({w.id for w in remote}) == 2 and len(session.instances()) == 2
        futs = [pool.submit("nap", 0.2) for _ in range(2)]
        assert [f.result(30) for f in futs] == [0.2, 0.2]
        assert [w.stats().calls_served for w in remote] == [1, 1]
        assert sorted(pool.map("add", [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert session.instances() == []  # the pool stopped its instances with itself
    with pytest.raises(corral.InvalidState):
        remote[0].call("noop")


def test_a_bundle_with_a_manifest_runs_in_its_own_environment(session, tmp_path):
    (tmp_path / "corral.toml").write_text(
        'name = "plug"\ntarget = "plug.py:Plug"\nrequirements = ["msgspec"]\n'
        'env = { PLUG_FLAG = "on" }\n')
    (tmp_path / "plug.py").write_text(
        "import os, sys\n\nclass Plug:\n    def where(self):\n"
        "        return sys.prefix, os.environ.get('PLUG_FLAG')\n")
    prog = session.upload(tmp_path)
    with session.launch(prog) as w:  # the target comes from corral.toml
        prefix, flag = w.call("where")
    assert flag == "on"
    assert "envs" in prefix and prefix != sys.prefix  # built by the plugin machinery


def test_a_target_outside_the_program_is_refused(session, program):
    from corral.remote.errors import LaunchError

    with pytest.raises(LaunchError, match="inside the program"):
        session.launch(program, target="../../etc/passwd.py:X")
    with pytest.raises(LaunchError, match="no program"):
        session.launch("0" * 64, target="m.py:M")


def test_files_cross_with_their_bytes(host, program, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"hello file" * 1000)
    with host.connect() as s:
        model = s.launch(program, target="remote_model.py:Model")
        back = model.call("echo", corral.File(str(src), "in.bin", "application/octet-stream"))
        assert isinstance(back, corral.File) and back.path != str(src)
        assert back.read_bytes() == src.read_bytes()
        assert back.name == "in.bin" and back.content_type == "application/octet-stream"
        assert model.call("echo", [corral.File(str(src))])[0].size == src.stat().st_size
    assert not os.path.exists(back.path)  # a session's received files end with it


def test_capabilities_describe_the_machine_and_its_load(session, model):
    caps = session.capabilities()
    assert caps["cpu_cores"] >= 1 and caps["memory_total"] > caps["memory_available"] > 0
    assert caps["tags"] == ["test-box"] and isinstance(caps["gpus"], list)
    assert sys.version.split()[0] in caps["python_versions"]
    assert caps["load"]["instances"] >= 1 and caps["load"]["sessions"] >= 1


def test_the_http_server_serves_a_remote_worker_unchanged(session, tmp_path):
    from corral.server.app import create_app
    from http_serving import run_server

    (tmp_path / "m.py").write_text(
        "class M:\n    def predict(self, x: int) -> int:\n        return x * 2\n")
    with session.launch(session.upload(tmp_path), target="m.py:M") as w:
        with run_server(create_app(w)) as srv, srv.client() as c:
            assert c.get("/health-check").json()["status"] == "READY"
            r = c.post("/predictions", json={"input": {"x": "21"}})  # converted there
            assert r.status_code == 200 and r.json()["output"] == 42
            assert c.post("/predictions", json={"input": {"x": "no"}}).status_code == 422


def test_a_remote_worker_is_a_runner(model):
    from corral.host.caller import Runner

    assert isinstance(model, Runner)
    usage = model.usage()
    assert usage.slots == 1 and usage.ready == 1 and model.capacity is None
