"""Ray workers on a real cluster (ray.cluster_utils.Cluster on this machine): placement by
tag, every kind of call, streams, cancel, events, big arrays, crashes of the model process,
a pool that cannot be placed, and the loss of a node mid-call."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import corral
import corral.ray
from conftest import fixture_ref, wait_until

MODEL = fixture_ref("ray_model:Model")


def _node_with(resource: str) -> str:
    import ray

    return next(n["NodeID"] for n in ray.nodes()
                if n["Alive"] and resource in n["Resources"])


@pytest.fixture(scope="module")
def nodes(cluster):
    """The ids of node A and node B."""
    return {"a": _node_with("corral-tag:a"), "b": _node_with("corral-tag:b")}


@pytest.fixture(scope="module")
def on_b(cluster):
    """One Ray worker on node B (tag b), shared by the tests that only call it."""
    with corral.ray.on(tags=["b"])(MODEL, config={"label": "on b"}) as w:
        yield w


def test_workers_land_exactly_on_the_node_with_their_tag(cluster, nodes, on_b):
    assert on_b.node_id == nodes["b"]
    with corral.ray.on(tags=["a"])(MODEL) as on_a:
        assert on_a.node_id == nodes["a"]
        assert on_a.call("label_of") == "plain"
    assert on_b.call("label_of") == "on b"  # the config reached setup() on the node


def test_calls_submits_maps_and_async_twins_behave_as_locally(on_b):
    assert on_b.call("echo", (1, {2, 3}, b"bytes")) == (1, {2, 3}, b"bytes")
    futures = [on_b.submit("echo", i) for i in range(5)]
    assert [f.result() for f in futures] == list(range(5))
    assert futures[0].worker is on_b and futures[0].sent
    assert list(on_b.map("echo", range(10))) == list(range(10))

    async def main():
        assert await on_b.acall("echo", "a") == "a"
        fut = on_b.asubmit("echo", 2)
        assert await fut == 2
        return [c async for c in on_b.astream("chunks_then_wait", "/nonexistent", 0.01)]

    assert asyncio.run(main()) == ["first", "gave up"]


def test_chunks_arrive_while_the_generator_runs(on_b, tmp_path):
    go = tmp_path / "go"
    stream = on_b.stream("chunks_then_wait", str(go))
    assert next(stream) == "first"
    go.touch()  # the generator waits for this: it sees it only if "first" came at once
    assert list(stream) == ["went on"]


def test_watch_and_on_event_deliver_logs_progress_and_metrics(on_b):
    seen = []
    assert on_b.options(on_event=seen.append).call("report", 2) == "reported"
    kinds = [type(e).__name__ for e in seen]
    assert kinds.count("Progress") == 2 and kinds.count("Metric") == 2 and "Log" in kinds
    fut = on_b.submit("report", 3)  # events of a plain call come with its reply
    assert fut.result() == "reported"
    assert fut.metrics == {"seen": [0, 1, 2]} and fut.progress.step == 3
    assert fut.logs == ["working\n"] or fut.logs == ["working"]
    items = list(on_b.watch("report", 1))
    assert isinstance(items[-1], corral.Done) and items[-1].value == "reported"
    assert any(isinstance(e, corral.Progress) for e in items)


def test_cancel_stops_the_call_in_the_model_process(on_b, tmp_path):
    marker = str(tmp_path / "spin")
    fut = on_b.submit("spin", marker)
    wait_until(lambda: os.path.exists(marker + ".started"), 30, "the call to start")
    assert fut.cancel()
    with pytest.raises(corral.Cancelled):
        fut.result()
    wait_until(lambda: os.path.exists(marker + ".stopped"), 15,
               "the cancel to stop the work in the model process")
    assert on_b.call("echo", 1) == 1  # the worker goes on


def test_closing_a_stream_stops_its_generator_in_the_model_process(on_b, tmp_path):
    marker = str(tmp_path / "spin")
    stream = on_b.stream("spin_stream", marker)
    assert next(stream) == "started"
    wait_until(lambda: os.path.exists(marker + ".started"), 30, "the generator to spin")
    stream.close()
    wait_until(lambda: os.path.exists(marker + ".stopped"), 15, "the generator to stop")

    async def cancelled_task():
        task = asyncio.ensure_future(on_b.acall("spin", marker + "2"))
        while not os.path.exists(marker + "2.started"):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_task())
    wait_until(lambda: os.path.exists(marker + "2.stopped"), 15, "the async call to stop")
    assert on_b.call("echo", 2) == 2


def test_a_timeout_stops_the_call_and_raises_call_timeout(on_b, tmp_path):
    marker = str(tmp_path / "spin")
    with pytest.raises(corral.CallTimeout):
        on_b.options(timeout=0.5).call("spin", marker)
    wait_until(lambda: os.path.exists(marker + ".stopped"), 15, "the work to stop")


def test_a_user_error_is_a_remote_error_with_the_remote_traceback(on_b):
    with pytest.raises(ValueError, match="bad value from the model") as info:
        on_b.call("fail")
    assert isinstance(info.value, corral.RemoteError)
    assert "ray_model.py" in info.value.remote_traceback
    with pytest.raises(corral.MethodNotFound):
        on_b.call("no_such_method")
    with pytest.raises(corral.ArgumentError):
        on_b.call("echo", 1, 2, 3)


def test_values_are_never_pickled_unless_allowed(on_b):
    class Local:
        pass

    with pytest.raises(TypeError, match=r"args\[0\]"):
        on_b.call("echo", Local())


def test_a_100_mb_array_goes_and_comes_back_exact(on_b):
    arr = np.arange(100 * 2**20 // 8, dtype=np.float64)
    assert on_b.call("total", arr) == float(arr.sum())
    back = on_b.call("twice", arr)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr * 2)
    big_bytes = os.urandom(3 * 2**20)
    assert on_b.call("echo", big_bytes) == big_bytes
    pieces = list(on_b.stream("ramps", 2**18, 4))  # 2 MiB chunks, streamed
    assert len(pieces) == 4 and np.array_equal(np.concatenate(pieces), arr[:2**20])


def test_a_killed_actor_fails_its_calls_with_node_lost_and_is_replaced(cluster, nodes,
                                                                      tmp_path):
    with corral.ray.on(tags=["a"])(MODEL) as w:
        model_pid, actor_pid = w.pid, w.info.actor_pid
        fut = w.submit("wait_for", str(tmp_path / "never"))
        wait_until(lambda: w.stats().busy == 1, 30, "the call to run")
        os.kill(actor_pid, signal.SIGKILL)
        with pytest.raises(corral.ray.NodeLost) as info:
            fut.result(timeout=30)
        assert info.value.node_id == nodes["a"]
        wait_until(lambda: w.state == "ready", 60, "the replacement")
        assert w.info.actor_pid != actor_pid and w.node_id == nodes["a"]
        assert w.call("echo", 3) == 3 and w.health().restarts == 1
        assert len(w.crashes) == 1
        # the old model process went with its actor (its keeper saw the actor go)
        wait_until(lambda: not _alive(model_pid), 15, "the old model process to end")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_describe_health_stats_and_reload(on_b):
    assert "echo" in on_b.describe()
    health = on_b.health()
    assert health.status == "ready" and health.pid == on_b.pid
    assert on_b.stats().calls_served > 0
    on_b.reload({"label": "reloaded"})
    assert on_b.call("label_of") == "reloaded"
    on_b.reload({"label": "on b"})


def test_sigkill_of_the_model_process_is_a_crash_restarted_on_its_node(cluster, tmp_path):
    with corral.ray.on(tags=["b"])(MODEL) as w:
        before = w.call("where")["pid"]
        node, actor_pid = w.node_id, w.info.actor_pid
        fut = w.submit("wait_for", str(tmp_path / "never"))
        wait_until(lambda: w.stats().busy == 1, 30, "the call to run")
        os.kill(before, signal.SIGKILL)
        with pytest.raises(corral.WorkerCrashed) as info:
            fut.result()
        assert not isinstance(info.value, corral.ray.NodeLost)
        assert info.value.signal_name == "SIGKILL"
        wait_until(lambda: w.health().status == "ready", 30, "the restart on the node")
        after = w.call("where")["pid"]
        assert after != before and w.pid == after
        assert w.node_id == node and w.info.actor_pid == actor_pid  # the actor stayed
        assert w.health().restarts == 1
        fut = w.submit("wait_for", str(tmp_path / "never"))
        wait_until(lambda: w.stats().busy == 1, 30, "the call to run")
        w.stop(grace=0.5)
        with pytest.raises(corral.WorkerStopped):
            fut.result(timeout=30)
        assert w.state == "stopped"


def test_a_pool_places_every_worker_by_tag_and_spreads_the_calls(nodes):
    with corral.Pool(MODEL, workers=2, runner=corral.ray.on(tags=["a"])) as pool:
        assert {w.node_id for w in pool.workers} == {nodes["a"]}
        assert sorted(pool.map("echo", range(20))) == list(range(20))
        pids = {pool.submit("where").result()["pid"] for _ in range(6)}
        assert len(pids) >= 1
        assert pool.health().status == "ready"


def test_requirements_get_an_environment_built_once_on_the_node(cluster, tmp_path):
    from plugins.test_envs import make_wheel

    wheel = make_wheel(str(tmp_path / "wheels"), "corral-ray-probe", "1.2.3")
    root = tmp_path / "envs"
    with corral.Pool(MODEL, workers=2, runner=corral.ray.on(tags=["a"]),
                     requirements=[f"corral-ray-probe @ file://{wheel}"],
                     env_root=str(root)) as pool:
        seen = [pool.submit("probe_version").result() for _ in range(4)]
        assert {s["version"] for s in seen} == {"1.2.3"}
        built = [p for p in root.iterdir() if (p / "corral-env.json").exists()]
        assert len(built) == 1  # two workers on the node, one build (the cache's lock)
        assert {s["python"] for s in seen} == {str(built[0] / "bin" / "python")}
        assert {w.info.environment for w in pool.workers} == {built[0].name}
    with pytest.raises(corral.RemoteError, match="corral_ray_probe"):
        with corral.ray.on(tags=["a"])(MODEL) as plain:  # no requirements: not there
            plain.call("probe_version")


def test_a_setup_that_fails_on_the_node_raises_setup_error_here(cluster):
    worker = corral.ray.on(tags=["a"])(fixture_ref("basic:Basic"),
                                       config={"fail_setup": True})
    with pytest.raises(corral.SetupError) as info:
        worker.start()
    assert "basic.py" in info.value.remote_traceback
    assert worker.state == "failed"
    with pytest.raises(corral.InvalidState):
        worker.call("greet", "x")


def test_a_pool_that_needs_a_tag_no_node_has_fails_at_once_naming_it(cluster):
    pool = corral.Pool(MODEL, workers=2, runner=corral.ray.on(tags=["tpu"]))
    with pytest.raises(corral.ray.NoNodeFits, match="tag 'tpu'") as info:
        pool.start()
    assert info.value.wanted == {"CPU": 1, "corral-tag:tpu": 1}
    assert pool.state == "failed"


def test_losing_a_node_mid_call_fails_its_calls_and_the_pool_recovers(cluster, nodes,
                                                                     tmp_path):
    node_c = cluster.add_node(num_cpus=2, object_store_memory=100 * 2**20,
                              resources=corral.ray.tag_resources(["lossy"]))
    cluster.wait_for_nodes()
    b, c = nodes["b"], node_c.node_id
    placement = corral.ray.on(tags=["lossy"], strategy="SPREAD")
    with corral.Pool(MODEL, workers=2, runner=placement) as pool:
        assert {w.node_id for w in pool.workers} == {b, c}
        lost = next(i for i, w in enumerate(pool.workers) if w.node_id == c)
        on_c, on_b_worker = pool.workers[lost], pool.workers[1 - lost]
        go = tmp_path / "go"
        # B's worker full (slots 1 + prefetch 1), so the pool sends the idempotent call to C.
        hold = [on_b_worker.submit("wait_for", str(go)) for _ in range(2)]
        plain = on_c.submit("wait_for", str(go))
        idem = pool.options(idempotent=True).submit("wait_for", str(go))
        wait_until(lambda: idem.worker is not None, 10, "the idempotent call to be sent")
        assert idem.worker is on_c
        cluster.remove_node(node_c, allow_graceful=False)
        with pytest.raises(corral.ray.NodeLost) as info:
            plain.result(timeout=30)
        assert info.value.node_id == c and c[:12] in str(info.value)
        assert isinstance(info.value, corral.WorkerCrashed)
        wait_until(lambda: idem.attempts == 2 or idem.done(), 30, "the retry")
        go.touch()
        assert idem.result(timeout=30) == "went on"  # run again, on B: by B's worker,
        assert idem.attempts == 2 and idem.worker.node_id == b  # or C's replacement there
        assert [h.result(timeout=30) for h in hold] == ["went on"] * 2
        wait_until(lambda: pool.ready == 2, 60, "the pool to be back to strength")
        assert {w.node_id for w in pool.workers} == {b}
        assert on_c.crashes and "died" in on_c.crashes[0].reason
        assert pool.call("echo", 5) == 5
        assert pool.health().status == "ready"


def test_a_replacement_that_finds_no_room_leaves_the_pool_degraded_with_the_reason(
        cluster, nodes):
    node_d = cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20,
                              resources={"slot": 1})
    cluster.wait_for_nodes()
    placement = corral.ray.on(resources={"slot": 1}, place_timeout=8)
    with corral.Pool(MODEL, workers=2, runner=placement) as pool:
        assert {w.node_id for w in pool.workers} == {nodes["b"], node_d.node_id}
        on_d = next(w for w in pool.workers if w.node_id == node_d.node_id)
        cluster.remove_node(node_d, allow_graceful=False)
        wait_until(lambda: on_d.state == "failed", 60, "the replacement to give up")
        health = pool.health()
        assert health.status == "degraded" and health.ready == 1
        detail = next(h.detail for h in health.workers if h.status == "failed")
        assert "no node freed room" in detail and "slot" in detail
        assert pool.call("echo", 7) == 7  # the other worker serves on


def test_nodes_tell_capabilities_tags_and_this_process_s_calls(nodes, on_b, tmp_path):
    fut = on_b.submit("wait_for", str(tmp_path / "go"))
    wait_until(lambda: on_b.load == 1, 10, "the call to be in flight")
    found = {n.node_id: n for n in corral.ray.nodes()}
    a, b = found[nodes["a"]], found[nodes["b"]]
    assert a.alive and a.cpus == 4 and a.tags == ["a", "shared"]
    assert b.tags == ["b", "lossy", "shared"] and b.resources == {"slot": 1}
    assert b.python == sys.version.split()[0] and b.hostname == socket.gethostname()
    assert b.load is not None and b.memory_used > 0 and b.memory > 0
    assert b.workers >= 1 and b.active_calls == 1 and a.active_calls == 0
    assert b.cpus_free < b.cpus  # on_b holds one
    (tmp_path / "go").touch()
    assert fut.result() == "went on"


def test_corral_ray_nodes_prints_the_cluster(cluster, nodes):
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "src"))
    done = subprocess.run([sys.executable, "-m", "corral", "ray", "nodes", "--address",
                           cluster.address, "--json"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {n["node_id"]: n for n in json.loads(done.stdout)}
    assert listed[nodes["a"]]["tags"] == ["a", "shared"]
    table = subprocess.run([sys.executable, "-m", "corral", "ray", "nodes", "--address",
                            cluster.address], capture_output=True, text=True, env=env,
                           timeout=120)
    assert table.returncode == 0, table.stderr
    assert nodes["a"][:12] in table.stdout and "lossy" in table.stdout


def test_serve_with_ray_answers_predictions_from_workers_on_the_cluster(cluster):
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "src"))
    env.pop("CORRAL_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", MODEL, "--ray",
                             cluster.address, "--workers", "2", "--ray-tag", "a",
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # a server in a subprocess has no event to wait on
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/health-check", timeout=2).json()["status"] == "READY":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.1)
        r = httpx.post(f"{base}/predictions", json={"input": {"x": 4}}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded" and r.json()["output"] == 40
        with httpx.stream("POST", f"{base}/predictions", json={"input": {"x": 5}},
                          headers={"Accept": "text/event-stream"}, timeout=60) as events:
            text = "".join(events.iter_text())
        assert "event: completed" in text and '"output":50' in text
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_plugin_manager_drives_ray_workers_unchanged(cluster, nodes, tmp_path):
    from corral.plugins.manager import PluginManager
    from plugins.manager_helpers import make_plugin

    make_plugin(tmp_path, "tool")
    with PluginManager([str(tmp_path)], entry_points=False,
                       runner=corral.ray.on(tags=["a"])) as manager:
        handle = manager.load("tool", {"size": 3})
        assert isinstance(handle.worker, corral.ray.RayWorker)
        assert handle.worker.node_id == nodes["a"]
        assert manager.call("tool", "describe")["size"] == 3
        assert list(handle.worker.stream("count", 3)) == [0, 1, 2]
