"""A reply the host cannot rebuild fails that call, never the worker (issue 12, item 1).

Every builtin exception class comes back as its twin; a value of a type the host never
imported fails only its call with UndecodableValue; a frame that does not decode at all
makes that process defunct, every waiter ends with ProtocolError, and the worker restarts
like after a crash. ``corral serve`` goes on serving through all of it and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import builtins
import signal
import subprocess

import pytest

import corral
from conftest import fixture_ref, wait_until
from fixtures.unrebuildable import builtin_error, builtin_exception_names

TARGET = fixture_ref("unrebuildable:Unrebuildable")
DEADLINE = 30.0
#: Attributes that builtin exceptions take from their arguments.
ATTRS = ("errno", "strerror", "filename", "filename2", "encoding", "object", "start", "end",
         "reason", "code", "value", "msg", "lineno", "offset", "text", "end_lineno",
         "end_offset")


@pytest.fixture(scope="module")
def worker():
    with corral.Worker(TARGET) as w:
        yield w


@pytest.mark.parametrize("name", builtin_exception_names())
def test_every_builtin_exception_comes_back_as_its_twin(worker, name):
    local = builtin_error(name)
    pid = worker.pid
    with pytest.raises(corral.RemoteError) as info:
        worker.call("raise_builtin", name)
    err = info.value
    assert err.type_name == f"builtins.{type(local).__name__}"
    text = str(local)
    assert str(err) == (f"builtins.{type(local).__name__}: {text}" if text
                        else f"builtins.{type(local).__name__}")
    if isinstance(local, BaseExceptionGroup):
        assert isinstance(err, BaseExceptionGroup)
        assert err.message == local.message
        assert [e.type_name for e in err.exceptions] == \
            [f"builtins.{type(e).__name__}" for e in local.exceptions]
        assert all(isinstance(e, corral.RemoteError) for e in err.exceptions)
    elif isinstance(local, Exception):
        assert isinstance(err, type(local))
        assert err.args == local.args
        for attr in ATTRS:
            if hasattr(local, attr):
                assert getattr(err, attr) == getattr(local, attr), attr
    else:  # KeyboardInterrupt, SystemExit, GeneratorExit, BaseException: never as themselves
        assert type(err) is corral.RemoteError
        if name != "BaseException":  # (which every exception is)
            assert not isinstance(err, getattr(builtins, name))
    assert worker.call("ok") == "ok" and worker.pid == pid


def test_a_genuine_memory_error_fails_the_call_and_the_worker_serves_on(worker):
    pid = worker.pid
    with pytest.raises(MemoryError) as info:
        worker.call("memory_error")
    assert isinstance(info.value, corral.RemoteError)
    assert worker.call("ok") == "ok" and worker.pid == pid


def test_a_task_group_error_keeps_its_sub_exceptions(worker):
    with pytest.raises(ExceptionGroup) as info:
        worker.call("task_group")
    subs = sorted(info.value.exceptions, key=lambda e: e.type_name)
    assert [type(e).__name__ for e in subs] == ["RemoteFileNotFoundError", "RemoteValueError"]
    assert subs[0].errno == 2 and subs[0].filename == "/nope"
    # except* works on the twin as on a local group
    try:
        raise info.value
    except* ValueError as group:
        assert str(group.exceptions[0]) == "builtins.ValueError: first"
    except* OSError:
        pass


@pytest.mark.parametrize("kind, type_name", [
    ("dataclass", "unknown_to_host.Hidden"),
    ("struct", "unknown_to_host.HiddenStruct"),
    ("enum", "unknown_to_host.HiddenEnum"),
])
@pytest.mark.parametrize("mode", ["call", "submit", "acall"])
def test_a_result_of_a_type_the_host_does_not_know_fails_that_call_only(worker, kind,
                                                                         type_name, mode):
    pid = worker.pid
    if mode == "call":
        with pytest.raises(corral.UndecodableValue) as info:
            worker.call("hidden", kind)
        err = info.value
    elif mode == "submit":
        err = worker.submit("hidden", kind).exception(DEADLINE)
    else:
        with pytest.raises(corral.UndecodableValue) as info:
            asyncio.run(asyncio.wait_for(worker.acall("hidden", kind), DEADLINE))
        err = info.value
    assert isinstance(err, corral.UndecodableValue), repr(err)
    assert err.type_name == type_name
    assert err.where == "the result['items'][1]"
    assert type_name in str(err) and "the result['items'][1]" in str(err)
    assert worker.call("ok") == "ok" and worker.pid == pid and worker.state == "ready"


def test_a_chunk_of_an_unknown_type_fails_the_stream_and_stops_the_generator(worker):
    pid = worker.pid
    got = []
    with pytest.raises(corral.UndecodableValue, match=r"a chunk is a unknown_to_host.Hidden"):
        for chunk in worker.stream("hidden_chunks"):
            got.append(chunk)
    assert got == [1]
    assert worker.call("ok") == "ok" and worker.pid == pid


def test_a_metric_of_an_unknown_type_fails_its_call(worker):
    with pytest.raises(corral.UndecodableValue, match="metric 'm'"):
        worker.call("hidden_metric")
    assert worker.call("ok") == "ok"


def test_a_pool_future_with_an_unknown_result_completes_and_the_pool_serves_on():
    with corral.Pool(TARGET, workers=1) as pool:
        fut = pool.submit("hidden")
        assert isinstance(fut.exception(DEADLINE), corral.UndecodableValue)
        assert pool.call("ok") == "ok"


def test_an_undecodable_frame_ends_every_waiter_and_the_worker_restarts():
    with corral.Worker(TARGET, restart=corral.Restart(backoff=0.01)) as w:
        pid = w.pid
        guilty = w.submit("garbage")
        waiting = [w.submit("ok") for _ in range(5)]
        stream = w.stream("hidden_chunks")
        for fut in [guilty, *waiting]:
            assert isinstance(fut.exception(DEADLINE), corral.ProtocolError), fut
        with pytest.raises(corral.ProtocolError):
            list(stream)
        wait_until(lambda: w.state == "ready" and w.pid != pid, DEADLINE, "the restart")
        assert w.call("ok") == "ok"
        assert w.health().restarts == 1
        assert "broke the protocol" in w.crashes[-1].reason


def test_corral_serve_recovers_from_every_kind_and_stops_on_sigterm():
    import httpx

    from test_cli import _free_port, _wait_ready, spawned

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with spawned("serve", TARGET, "--port", str(port), stderr=subprocess.STDOUT) as proc:
        _wait_ready(proc, base)
        for kind in ("memory", "group", "hidden", "garbage"):
            r = httpx.post(f"{base}/predictions", json={"input": {"kind": kind}},
                           timeout=DEADLINE)
            assert r.status_code == 200, (kind, r.text)
            assert r.json()["status"] == "failed", (kind, r.json())
            _wait_ready(proc, base)  # after the garbage frame: restarted
            r = httpx.post(f"{base}/predictions", json={"input": {"kind": "ok"}},
                           timeout=DEADLINE)
            assert r.json()["status"] == "succeeded", (kind, r.json())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, out
