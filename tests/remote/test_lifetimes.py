"""Who owns what, and when it ends: disconnects, detach/attach, two clients, a server
killed mid-call."""

import signal
import time

import pytest

from conftest import wait_until
from corral.remote.errors import ConnectionLost, InstanceNotFound
from remote.conftest import MODEL, Host, gone, with_keeper


def test_disconnect_ends_the_instances_launched_in_the_session(host, program):
    s = host.connect()
    w = s.launch(program, target="remote_model.py:Model")
    pid = w.pid
    assert w.call("pid") == pid
    pids = with_keeper(pid)
    s._link.close()  # the connection just ends (no goodbye)
    wait_until(lambda: all(map(gone, pids)), 30, "the instance (and keeper) to end")


def test_close_waits_until_the_instances_stopped(host, program):
    s = host.connect()
    pid = s.launch(program, target="remote_model.py:Model").pid
    s.close()
    assert gone(pid)


def test_detached_instances_live_on_and_can_be_attached_again(host, program):
    s = host.connect()
    w = s.launch(program, target="remote_model.py:Model", detached=True)
    w.call("set_state", {"kept": True})
    identity, iid, pid = s.identity, w.id, w.pid
    s.close()
    assert not gone(pid)
    with host.connect(identity=identity) as again:
        assert [i.id for i in again.instances()] == [iid]
        w2 = again.attach(iid)
        assert w2.call("get_state") == {"kept": True}
        w2.stop()
    assert gone(pid)


def test_session_detach_keeps_everything_running(host, program):
    s = host.connect()
    pid = s.launch(program, target="remote_model.py:Model").pid
    identity = s.identity
    s.detach()
    assert not gone(pid)
    with host.connect(identity=identity) as again:
        (info,) = again.instances()
        again.attach(info.id).stop()
    assert gone(pid)


def test_two_clients_cannot_see_each_other(host, program):
    with host.connect() as a, host.connect() as b:
        wa = a.launch(program, target="remote_model.py:Model")
        assert [i.id for i in a.instances()] == [wa.id]
        assert b.instances() == []
        with pytest.raises(InstanceNotFound) as theirs:
            b.attach(wa.id)
        with pytest.raises(InstanceNotFound) as unknown:
            b.attach("no-such-instance")
        assert str(theirs.value).replace(wa.id, "X") == \
            str(unknown.value).replace("no-such-instance", "X")
        intruder = b.attach.__self__  # a session of another identity calling the id
        from corral.remote.worker import RemoteWorker

        fake = RemoteWorker(intruder, wa.info)
        with pytest.raises(InstanceNotFound):
            fake.call("pid")
        with pytest.raises(InstanceNotFound):
            fake.health()
        fake.stop()  # nothing of this client's to stop: nothing happens
        assert wa.call("add", 1, 1) == 2  # untouched


def test_server_killed_mid_call_fails_calls_within_a_second(tmp_path):
    h = Host(str(tmp_path / "store"))
    try:
        s = h.connect()
        prog = s.upload(MODEL)
        w = s.launch(prog, target="remote_model.py:Model", slots=2)
        pid = w.pid
        fut = w.submit("nap", 60)
        stream = w.stream("forever", 10)
        next(stream)
        wait_until(lambda: w.stats().busy >= 1, 30, "the calls to run")
        t0 = time.monotonic()
        h.proc.send_signal(signal.SIGKILL)
        with pytest.raises(ConnectionLost):
            fut.result(5)
        with pytest.raises(ConnectionLost):
            for _ in stream:
                pass
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(ConnectionLost):
            w.call("noop")
        s.close()
        wait_until(lambda: gone(pid), 10, "the workers to die with their host")
    finally:
        h.stop()


def test_linger_ends_a_detached_instance_without_a_client(tmp_path):
    h = Host(str(tmp_path / "store"), "--linger", "0.5")
    try:
        s = h.connect()
        prog = s.upload(MODEL)
        pid = s.launch(prog, target="remote_model.py:Model", detached=True).pid
        s.close()
        wait_until(lambda: gone(pid), 30, "the lingering instance to end")
    finally:
        h.stop()


def test_programs_survive_a_restart(tmp_path):
    store = str(tmp_path / "store")
    h = Host(store)
    try:
        with h.connect() as s:
            first = s.upload(MODEL)
            assert first.uploaded
    finally:
        h.stop()
    h = Host(store)
    try:
        with h.connect() as s:
            again = s.upload(MODEL)
            assert again.id == first.id and not again.uploaded  # skipped: it has it
            with s.launch(again, target="remote_model.py:Model") as w:
                assert w.call("add", 1, 2) == 3
    finally:
        h.stop()


def test_sigterm_drains_calls_in_flight_then_stops_every_instance(tmp_path):
    from corral.remote.errors import HandshakeError

    h = Host(str(tmp_path / "store"))
    try:
        s = h.connect()
        w = s.launch(s.upload(MODEL), target="remote_model.py:Model")
        pid = w.pid
        fut = w.submit("nap", 1.0)
        wait_until(lambda: w.stats().busy == 1, 30, "the call to run")
        h.proc.send_signal(signal.SIGTERM)

        def refused():
            try:
                h.connect().close()
            except HandshakeError as exc:
                return "503" in str(exc)
            return False

        wait_until(refused, 10, "new sessions to be refused while draining")
        assert fut.result(30) == 1.0  # the call in flight finished
        assert h.proc.wait(30) in (0, -signal.SIGTERM)
        wait_until(lambda: gone(pid), 10, "the instance to stop")
        s.close()
    finally:
        h.stop()
    assert "the server is shutting down" in h.log or '"status":503' in h.log
