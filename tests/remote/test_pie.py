"""PIE's protocol with the real pie-client 0.5.3 against ``python -m corral.remote.pie`` on
127.0.0.1: programs as corral worker processes, owned by their identity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import blake3
import msgpack
import pytest
import websockets
from pie_client import Event, PieClient, inferlet

from .pie_helpers import PieServer, pid_alive

pytestmark = pytest.mark.timeout(120)
STEP = 30.0  # seconds any one wait may take


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def drain(proc, limit: float = STEP) -> tuple[list, tuple]:
    events = []
    while True:
        ev, val = await asyncio.wait_for(proc.recv(), limit)
        events.append((ev, val))
        if ev in (Event.Return, Event.Error):
            return events, (ev, val)


async def install(client, fn) -> None:
    if not await client.check_program(fn.program):
        await client.install_program_bytes(fn.source.encode(), fn.manifest_toml())


# -- programs (self-contained: pie-client sends their source) ------------------------------


@inferlet
async def add(a: int = 1, b: int = 2):
    return {"sum": a + b}


@inferlet
def sync_text(word: str = "hi"):
    import os
    print("pid", os.getpid())
    return word.upper()


@inferlet
async def print_lines(n: int = 1000):
    for i in range(n):
        print(f"line {i:05d}")
    return {"printed": n}


@inferlet
async def echo(rounds: int = 1):
    from inferlet import session
    for _ in range(rounds):
        m = await session.receive()
        session.send("echo:" + m)
    return {"rounds": rounds}


@inferlet
async def files(count: int = 1):
    import hashlib

    from inferlet import session
    session.send("ready")
    got = []
    for _ in range(count):
        data = await session.receive_file()
        got.append(hashlib.sha256(data).hexdigest())
        session.send_file(data[::-1], name="reversed.bin")
    return {"sha256": got}


@inferlet
async def busy(x: int = 0):
    import os

    from inferlet import session
    session.send(str(os.getpid()))
    await session.receive()  # its pid is out: now spin, never yielding the loop
    while True:
        x += 1


@inferlet
def busy_sync(x: int = 0):
    import os
    print(os.getpid(), flush=True)  # streams while it spins: it runs on a thread
    while True:
        x += 1


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@inferlet
async def sleeper(seconds: float = 60.0):
    import asyncio
    import os
    print(os.getpid(), flush=True)
    await asyncio.sleep(seconds)
    return "woke"


@inferlet
async def fails(x: int = 0):
    def inner():
        raise ValueError(f"bad x {x}")
    inner()


@inferlet
async def uses_llm():
    import inferlet
    return inferlet.model.load("qwen")


# -- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = PieServer(tmp_path_factory.mktemp("pie"))
    yield srv
    srv.stop()


def test_the_inferlet_decorator_path_runs_a_function_in_its_own_process(server):
    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(add, a=40, b=2)
            assert await proc.result() == {"sum": 42}
            proc = await c.run(sync_text, word="corral")
            events, term = await drain(proc)
            assert term == (Event.Return, "CORRAL")  # a str return passes through
            pid = int("".join(v for e, v in events if e == Event.Stdout).split()[1])
            assert pid not in (os.getpid(), server.pid)
        return pid

    pid = run(main())
    # The process is gone once the program returned.
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(pid)


def test_a_thousand_printed_lines_arrive_in_order_before_the_return(server):
    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(print_lines, n=1000)
            return await drain(proc)

    events, term = run(main())
    assert term == (Event.Return, json.dumps({"printed": 1000}))
    outs = [v for e, v in events[:-1] if e == Event.Stdout]
    assert len(outs) == len(events) - 1  # nothing but stdout before the return
    assert "".join(outs).splitlines() == [f"line {i:05d}" for i in range(1000)]


def test_signals_reach_the_program_and_its_messages_come_back(server):
    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(echo, rounds=3)
            got = []
            for i in range(3):
                await proc.signal(f"m{i}")
                got.append(await asyncio.wait_for(proc.recv(), STEP))
            return got, await drain(proc)

    got, (_, term) = run(main())
    assert got == [(Event.Message, f"echo:m{i}") for i in range(3)]
    assert term == (Event.Return, json.dumps({"rounds": 3}))


def test_files_go_to_the_program_and_back_checked_by_blake3(server):
    import hashlib

    first, second = os.urandom(600 * 1024 + 7), b""  # three chunks; an empty file

    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(files, count=2)
            assert await asyncio.wait_for(proc.recv(), STEP) == (Event.Message, "ready")
            await proc.transfer_file(first)  # before receive_file runs: kept, not dropped
            await proc.transfer_file(second)
            return await drain(proc)

    events, term = run(main())
    back = [v for e, v in events if e == Event.File]
    assert back == [first[::-1], second]
    assert back[0].name == "reversed.bin"
    assert json.loads(term[1]) == {"sha256": [hashlib.sha256(first).hexdigest(),
                                              hashlib.sha256(second).hexdigest()]}


def test_a_file_with_a_wrong_hash_never_reaches_the_program_and_the_client_is_told(server):
    import hashlib

    good = os.urandom(300 * 1024)

    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(files, count=1)
            assert await asyncio.wait_for(proc.recv(), STEP) == (Event.Message, "ready")
            for i, part in enumerate((good[:200_000], good[200_000:])):
                await c.ws.send(msgpack.packb({
                    "type": "transfer_file", "process_id": proc.process_id,
                    "file_hash": "00" * 32, "chunk_index": i, "total_chunks": 2,
                    "chunk_data": part}, use_bin_type=True))
            notice = await asyncio.wait_for(proc.recv(), STEP)
            await proc.transfer_file(good)
            return notice, await drain(proc)

    notice, (events, term) = run(main())
    assert notice[0] == Event.Stderr
    assert notice[1].startswith("[corral] transfer_file: hash mismatch: declared " + "00" * 32)
    assert json.loads(term[1]) == {"sha256": [hashlib.sha256(good).hexdigest()]}


def test_an_exception_is_an_error_event_with_the_programs_own_traceback(server):
    async def main():
        async with PieClient(server.url) as c:
            return await drain(await c.run(fails, x=7))

    _, (ev, text) = run(main())
    assert ev == Event.Error
    assert "ValueError: bad x 7" in text
    assert 'raise ValueError(f"bad x {x}")' in text  # the program's line, quoted
    assert "guest.py" not in text  # corral's frames are not the program's


def test_the_llm_parts_of_inferlet_say_corral_has_no_engine(server):
    async def main():
        async with PieClient(server.url) as c:
            return await drain(await c.run(uses_llm))

    _, (ev, text) = run(main())
    assert ev == Event.Error
    assert "NoLLMEngine" in text and "no LLM engine" in text and "inferlet.model.load" in text


@pytest.mark.parametrize("program", [busy, busy_sync], ids=["async", "sync"])
def test_terminate_ends_a_busy_loop_for_real(server, program):
    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(program)
            ev, text = await asyncio.wait_for(proc.recv(), STEP)
            pid = int(text)
            if ev == Event.Message:
                await proc.signal("spin")
            start = cpu_ticks(pid)
            deadline = time.monotonic() + STEP
            while cpu_ticks(pid) < start + 5:  # it is burning a core
                assert time.monotonic() < deadline, "the program never spun"
                await asyncio.sleep(0.01)
            await proc.terminate()
            alive = pid_alive(pid)
            return alive, await drain(proc)

    alive, (_, term) = run(main())
    assert not alive  # dead when terminate answered, not only reported so
    assert term == (Event.Error, "Signal")


def test_a_disconnecting_client_ends_its_captured_processes(server):
    async def main():
        async with PieClient(server.url) as c:
            proc = await c.run(sleeper)
            _, text = await asyncio.wait_for(proc.recv(), STEP)
            return int(text)

    pid = run(main())
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(pid)


def test_an_uncaptured_process_lives_on_and_its_owner_attaches_and_lists_it(server):
    async def launch():
        async with PieClient(server.url, identity="team/ann") as c:
            await install(c, sleeper)
            proc_id = await c.launch_process(sleeper.program, {"seconds": 60},
                                             capture_outputs=False)
            assert proc_id.process_id == ""  # as PIE: no id when outputs are not captured
            listed = await c.list_processes()
            return listed

    listed = run(launch())
    assert [p["program"] for p in listed] == [sleeper.program]
    assert listed[0]["username"] == "ann" and json.loads(listed[0]["input"]) == {"seconds": 60}
    pid_of = listed[0]["id"]

    async def attach():
        async with PieClient(server.url, identity="team/ann") as c:
            proc = await c.attach_process(pid_of)
            _, text = await asyncio.wait_for(proc.recv(), STEP)  # the backlog is replayed
            with pytest.raises(Exception, match="already attached"):
                async with PieClient(server.url, identity="team/ann") as c2:
                    await c2.attach_process(pid_of)
            await proc.terminate()
            _, term = await drain(proc)
            return int(text), term, await c.list_processes()

    pid, term, after = run(attach())
    assert term == (Event.Error, "Signal") and after == []
    assert not pid_alive(pid)


def test_two_identities_cannot_see_or_touch_each_others_processes(server):
    async def main():
        async with PieClient(server.url, identity="acme/alice") as a, \
                PieClient(server.url, identity="acme/bob") as b:
            proc = await a.run(echo, rounds=1)
            assert await b.list_processes() == []
            for attempt in (b.attach_process(proc.process_id),
                            b.terminate_process(proc.process_id)):
                with pytest.raises(Exception, match="Process not found"):
                    await attempt
            await b.signal_process(proc.process_id, "from bob")  # dropped: not found
            listed = await a.list_processes()
            await proc.signal("from alice")
            first = await asyncio.wait_for(proc.recv(), STEP)
            return first, listed, await drain(proc)

    first, listed, (_, term) = run(main())
    assert first == (Event.Message, "echo:from alice")  # bob's signal never arrived
    assert [p["username"] for p in listed] == ["alice"]
    assert term[0] == Event.Return


def test_the_username_of_auth_identify_is_the_identity(server):
    async def main():
        async with PieClient(server.url) as c1, PieClient(server.url) as c2:
            await c1.authenticate("carol")
            await c2.authenticate("dave")
            proc = await c1.run(echo, rounds=1)
            seen_by_dave = await c2.list_processes()
            seen_by_carol = await c1.list_processes()
            await proc.terminate()
            return seen_by_dave, seen_by_carol

    dave, carol = run(main())
    assert dave == [] and [p["username"] for p in carol] == ["carol"]


# -- the wire, raw ----------------------------------------------------------------------------


async def raw(url: str, frames: list, replies: int, identity: str = "default/raw"):
    async with websockets.connect(url + "/v1/ws", max_size=None,
                                  additional_headers={"x-pie-identity": identity}) as ws:
        for fr in frames:
            await ws.send(fr if isinstance(fr, bytes) else msgpack.packb(fr))
        out = []
        while len(out) < replies:
            msg = await asyncio.wait_for(ws.recv(), STEP)
            if isinstance(msg, bytes):
                out.append(msgpack.unpackb(msg))
        return out


MANIFEST = """[package]
name = "raw-prog"
version = "1.0.0"

[runtime]
language = "python"
entry = "main"
call = "kwargs"
"""
SOURCE = b"def main(x=1):\n    return x * 2\n"


def chunk(index: int, total: int, data: bytes, digest: str | None = None,
          corr_id: int = 1) -> dict:
    return {"type": "add_program", "corr_id": corr_id,
            "program_hash": digest or blake3.blake3(SOURCE).hexdigest(),
            "manifest": MANIFEST, "force_overwrite": False, "chunk_index": index,
            "total_chunks": total, "chunk_data": data}


@pytest.mark.parametrize("frames, expected", [
    ([chunk(0, 1, SOURCE, digest="00" * 32)], "hash mismatch: declared " + "00" * 32),
    ([chunk(1, 2, SOURCE[10:]), chunk(0, 2, SOURCE[:10])], "First chunk index must be 0"),
    ([chunk(0, 3, SOURCE[:5]), chunk(2, 3, SOURCE[5:10]), chunk(1, 3, SOURCE[10:])],
     "Out-of-order chunk: expected 1, got 2"),
    ([chunk(0, 2, SOURCE[:5]), chunk(1, 3, SOURCE[5:])], "Chunk count mismatch"),
], ids=["wrong-hash", "first-not-0", "out-of-order", "count-changes"])
def test_a_bad_upload_gets_one_clear_answer_for_its_corr_id(server, frames, expected):
    replies = run(raw(server.url, frames + [{"type": "ping", "corr_id": 9}], 2))
    assert replies[0]["corr_id"] == 1 and replies[0]["ok"] is False
    assert expected in replies[0]["result"]
    assert replies[1] == {"type": "response", "corr_id": 9, "ok": True, "result": "Pong"}


def test_an_oversize_frame_is_answered_for_its_corr_id(server):
    big = {"type": "ping", "corr_id": 5, "pad": b"x" * (9 * 1024 * 1024)}
    replies = run(raw(server.url, [msgpack.packb(big), msgpack.packb({"type": "ping",
                                                                      "corr_id": 6})], 2))
    assert replies[0]["corr_id"] == 5 and replies[0]["ok"] is False
    assert "exceeds the limit" in replies[0]["result"]
    assert replies[1]["result"] == "Pong"


def test_unknown_and_malformed_frames_name_the_problem(server):
    replies = run(raw(server.url, [
        {"type": "fly", "corr_id": 1},
        {"type": "launch_process", "corr_id": 2},
        {"type": "launch_process", "corr_id": 3, "inferlet": "nope@1", "input": "{}"},
        {"type": "check_program", "corr_id": 4, "name": "nope", "version": "1"},
        {"type": "query", "corr_id": 5, "subject": "model_status", "record": ""},
    ], 5))
    by_id = {r["corr_id"]: r for r in replies}
    assert "unknown frame type 'fly'" in by_id[1]["result"] and "ping" in by_id[1]["result"]
    assert "invalid launch_process frame" in by_id[2]["result"]
    assert "inferlet" in by_id[2]["result"]
    assert by_id[3]["result"] == "Program not found: nope@1"
    assert by_id[4] == {"type": "response", "corr_id": 4, "ok": True, "result": "false"}
    assert by_id[5]["ok"] is False and "no LLM engine" in by_id[5]["result"]


def test_a_manifest_program_installs_and_launches_by_name_and_bare_name(server):
    async def main():
        async with websockets.connect(server.url + "/v1/ws", additional_headers={
                "x-pie-identity": "default/raw"}) as ws:
            async def ask(*frames, replies=1):
                for fr in frames:
                    await ws.send(msgpack.packb(fr))
                return [msgpack.unpackb(await asyncio.wait_for(ws.recv(), STEP))
                        for _ in range(replies)]

            installed = await ask(chunk(0, 2, SOURCE[:10]), chunk(1, 2, SOURCE[10:]))
            checked = await ask({"type": "check_program", "corr_id": 2, "name": "raw-prog",
                                 "version": "1.0.0"})
            launched = await ask({"type": "launch_process", "corr_id": 3,
                                  "inferlet": "raw-prog", "input": json.dumps({"x": 21}),
                                  "capture_outputs": True}, replies=2)
            refused = await ask({"type": "launch_process", "corr_id": 4,
                                 "inferlet": "raw-prog@1.0.0", "input": "[1]"})
            return installed + checked + launched + refused

    installed, checked, response, event, refused = run(main())
    assert installed == {"type": "response", "corr_id": 1, "ok": True,
                         "result": "Program installed successfully"}
    assert checked["result"] == "true"
    assert response["ok"] and event == {"type": "process_event",
                                        "process_id": response["result"],
                                        "event": "return", "value": "42"}
    assert refused["ok"] is False and "must be a JSON object" in refused["result"]


def test_a_missing_identity_is_refused_before_the_upgrade(server):
    async def main():
        async with websockets.connect(server.url + "/v1/ws"):
            pass

    with pytest.raises(websockets.InvalidStatus) as info:
        run(main())
    assert info.value.response.status_code == 401
    assert b"x-pie-identity" in info.value.response.body


# -- [dependencies] -------------------------------------------------------------------------


def test_a_program_with_dependencies_runs_in_an_environment_of_its_own(tmp_path):
    from plugins.test_envs import make_wheel

    links = tmp_path / "links"
    make_wheel(links, "corraltest-piedep", "1.5", body="def hello():\n    return 'dep!'\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {links}\n")
    srv = PieServer(tmp_path, extra_env={"PIP_CONFIG_FILE": str(conf)}, warm=1,
                    own_pip_config=True)
    manifest = MANIFEST.replace('name = "raw-prog"', 'name = "with-dep"') + \
        '\n[dependencies]\ncorraltest-piedep = "1.5"\n'
    source = (b"def main():\n    import sys, corraltest_piedep\n"
              b"    return {'hello': corraltest_piedep.hello(), 'python': sys.executable}\n")
    try:
        async def main():
            async with PieClient(srv.url) as c:
                await c.install_program_bytes(source, manifest)
                proc = await c.launch_process("with-dep@1.0.0", {})
                return await proc.result()

        got = run(main())
    finally:
        srv.stop()
    assert got["hello"] == "dep!"
    assert got["python"].startswith(str(tmp_path / "envs"))


# -- auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    srv = PieServer(tmp_path_factory.mktemp("pie-token"), token="s3cret-token", warm=1)
    yield srv
    srv.stop()


def test_with_a_token_the_identity_header_carries_it(token_server):
    async def main():
        async with PieClient(token_server.url, identity="acme/eve:s3cret-token") as c:
            return await (await c.run(add, a=1, b=1)).result()

    assert run(main()) == {"sum": 2}


def test_with_a_token_a_client_without_it_can_only_authenticate(token_server):
    async def main():
        async with PieClient(token_server.url, identity="acme/eve") as c:
            with pytest.raises(Exception, match="authentication required"):
                await c.ping()
            with pytest.raises(Exception, match="wrong token"):
                await c.authenticate("eve:guess")
            await c.authenticate("eve:s3cret-token")
            await c.ping()

    run(main())


def test_with_a_token_a_wrong_one_in_the_header_is_refused(token_server):
    async def main():
        async with PieClient(token_server.url, identity="acme/eve:nope"):
            pass

    with pytest.raises(websockets.InvalidStatus) as info:
        run(main())
    assert info.value.response.status_code == 401
    log = token_server.log.read_text()
    assert "s3cret-token" not in log and "nope" not in log  # never logged


# -- pie-client's command line ------------------------------------------------------------------


def pie_cli(*args: str, timeout: float = 60, stdin: str | None = None):
    exe = os.path.join(os.path.dirname(sys.executable), "pie-client")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, env=dict(os.environ, HOME=os.environ.get("HOME", "/")))


def test_the_command_line_pings_installs_and_submits(server, tmp_path):
    common = ["--host", "127.0.0.1", "--port", str(server.port), "--username", "cli-user"]
    ping = pie_cli("ping", *common)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "alive" in ping.stdout

    prog = tmp_path / "double.py"
    prog.write_text("def main(x=1):\n    print('doubling', x)\n    return x * 2\n")
    manifest = tmp_path / "Pie.toml"
    manifest.write_text(MANIFEST.replace("raw-prog", "cli-double"))
    inst = pie_cli("install", "--path", str(prog), "--manifest", str(manifest), *common)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    assert "installed successfully" in inst.stdout
    again = pie_cli("install", "--path", str(prog), "--manifest", str(manifest), *common)
    assert "already exists" in again.stdout

    # submit reads stdin for a Ctrl-D (detach): hold it open until the program returns
    exe = os.path.join(os.path.dirname(sys.executable), "pie-client")
    hold_r, hold_w = os.pipe()
    try:
        with subprocess.Popen([exe, "submit", "cli-double@1.0.0", *common, "--", "--x", "21"],
                              stdin=hold_r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as sub:
            try:
                out, err = sub.communicate(timeout=60)
            finally:
                if sub.poll() is None:
                    sub.kill()
    finally:
        os.close(hold_r)
        os.close(hold_w)
    assert sub.returncode == 0, out + err
    assert "doubling 21" in out and "Completed: 42" in out


def test_a_killed_fork_server_is_replaced(tmp_path):
    import signal

    from corral.remote.pie.warm import WarmPool

    pool = WarmPool(size=0)
    try:
        first = pool._zygote
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(10)
        w = pool.take()  # a worker from a new fork server
        try:
            assert pool._zygote is not first and pool._zygote.alive
            assert w.call("deliver", "signal", "x") is None
        finally:
            w.kill()
    finally:
        pool.close()
