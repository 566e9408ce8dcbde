#!/usr/bin/env python
"""HTTP server benchmark: corral's Cog-compatible server side by side with coglet.

    .venv/bin/python benchmarks/bench_server.py            # full run (~1-2 min, 2 vCPUs)
    .venv/bin/python benchmarks/bench_server.py --smoke    # corral + bare floor only, tiny counts

Issue 6 item 9. Every server runs as its own process on 127.0.0.1 and is measured in the
same run by the same client (``http.client`` keep-alive connections, one per thread):

* sequential no-op predictions on one connection: p50/p90 latency and pred/s;
* 8 connections for a fixed time: corral with an async predictor and 8 slots, and corral
  with a Pool of 2 sync workers, against coglet with ``COG_MAX_CONCURRENCY=8`` (async) and
  coglet with its only sync setting (1 slot); successful pred/s, 409/429/other answers;
* a 50 MB file in and out (the predictor copies its input file to a new file and returns
  it): coglet takes it as a data: URL in the JSON body and returns a data: URL (its only
  way without an upload server); corral takes a multipart upload and returns a /files
  link, which the client downloads inside the timing, and corral with data: URLs both
  ways too;
* a 50 MB JSON string echoed back (no files), for both.

coglet comes from its own venv: ``$COGLET_PYTHON`` (a python with ``coglet`` and ``cog``)
or ``/tmp/coglet-venv/bin/python``. Without it (and always with ``--smoke``) the coglet
columns are skipped with a note and corral is compared with a bare Starlette route on
uvicorn only. Writes ``server.json`` and ``server.md`` to ``benchmarks/results/``
(``--smoke``: ``benchmarks/results/smoke/``; or ``--out DIR``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402

TARGETS = os.path.join(HERE, "server_targets")
DEFAULT_COGLET_PYTHON = "/tmp/coglet-venv/bin/python"

FULL = dict(seq_warm=200, seq_n=2000, conns=8, conc_warm_s=0.5, conc_s=3.0,
            big_bytes=50 * 1000 * 1000, big_reps=3, lat_rounds=9, lat_n=400, sustain_s=20.0)
SMOKE = dict(seq_warm=20, seq_n=100, conns=8, conc_warm_s=0.1, conc_s=0.4,
             big_bytes=1 * 1000 * 1000, big_reps=1, lat_rounds=2, lat_n=30, sustain_s=0.4)
#: A request slower than this under sustained load counts as stalled (a no-op answers in
#: ~2 ms at 8 connections; a long garbage collection or a blocked loop takes far more).
SLOW_S = 0.1

# Issue 6 item 9's targets (ratios corral / coglet).
TARGET_P50 = 1 / 3
TARGET_CONC = 4.0
TARGET_BIG = 1 / 4
# Issue 19, against the floors measured in the same run.
TARGET_P50_PIPE = 1.3      # sequential p50 <= 1.3x the bare route forwarding to a Pipe worker
TARGET_CONC_PIPE = 0.8     # 8 connections >= 0.8x its requests/s
TARGET_CPU_INSTANT = 2.0   # server CPU per answer, instant runner <= 2x the bare route


def log(msg: str) -> None:
    print(f"[bench_server {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coglet_python() -> str | None:
    py = os.environ.get("COGLET_PYTHON") or DEFAULT_COGLET_PYTHON
    if not os.path.exists(py):
        return None
    ok = subprocess.run([py, "-c", "import coglet, cog"], capture_output=True, timeout=60)
    return py if ok.returncode == 0 else None


# -- servers ------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, proc: subprocess.Popen, port: int, tmp: str | None = None):
        self.name, self.proc, self.port, self.tmp = name, proc, port, tmp

    def conn(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            conn = server.conn(timeout=2)
            conn.request("GET", "/health-check")
            body = json.loads(conn.getresponse().read())
            conn.close()
            if body.get("status") == "READY":
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} not READY after {timeout} s")


@contextlib.contextmanager
def corral_server(mode: str) -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(TARGETS, "serve.py"), mode, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    server = Server({"bare": "bare Starlette", "bare_pipe": "bare Starlette + Pipe worker"}
                    .get(mode, f"corral {mode}"), proc, port)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)


@contextlib.contextmanager
def coglet_server(py: str, predictor: str, concurrency: int,
                  schema: str = "openapi_schema.json") -> Iterator[Server]:
    tmp = tempfile.mkdtemp(prefix="bench-coglet-")
    os.makedirs(os.path.join(tmp, ".cog"))
    shutil.copy(os.path.join(TARGETS, "cog_predict.py"), os.path.join(tmp, "predict.py"))
    shutil.copy(os.path.join(TARGETS, schema),
                os.path.join(tmp, ".cog", "openapi_schema.json"))
    port = free_port()
    env = dict(os.environ, PORT=str(port), COG_PREDICT_TYPE_STUB=f"predict.py:{predictor}",
               COG_MAX_CONCURRENCY=str(concurrency),
               PATH=os.path.dirname(py) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([py, "-m", "cog.server.http", "--host", "127.0.0.1"], cwd=tmp,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    server = Server(f"coglet {predictor} x{concurrency}", proc, port, tmp)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)
        shutil.rmtree(tmp, ignore_errors=True)


def stop(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    # the whole process group: coglet's worker subprocess, corral's workers
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)


# -- client -------------------------------------------------------------------------------

HEADERS = {"Content-Type": "application/json"}
NOOP_BODY = json.dumps({"input": {"text": "x"}}).encode()


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/predictions", body=body, headers=HEADERS)
    resp = conn.getresponse()
    return resp.status, resp.read()


def succeeded(status: int, data: bytes) -> bool:
    return status == 200 and b'"succeeded"' in data


def sequential(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    conn = server.conn()
    for _ in range(cfg["seq_warm"]):
        post(conn, NOOP_BODY)
    lat: list[float] = []
    bad = 0
    t_start = time.perf_counter()
    for _ in range(cfg["seq_n"]):
        t0 = time.perf_counter()
        status, data = post(conn, NOOP_BODY)
        lat.append(time.perf_counter() - t0)
        bad += not succeeded(status, data)
    wall = time.perf_counter() - t_start
    conn.close()
    return {"p50_us": c.percentile(lat, 50) * 1e6, "p90_us": c.percentile(lat, 90) * 1e6,
            "p99_us": c.percentile(lat, 99) * 1e6, "pred_per_s": len(lat) / wall,
            "n": len(lat), "failed": bad}


def interleaved_latency(servers: dict[str, Server], cfg: dict[str, Any]) -> dict[str, Any]:
    """Sequential no-op latency of several servers alive at once, measured in alternating
    rounds (the order rotating): a noisy neighbour on this shared machine then slows one
    round of every server instead of one server's whole run. The ratio of two servers is
    the median of their per-round ratios of p50s."""
    conns = {name: s.conn() for name, s in servers.items()}
    for conn in conns.values():
        for _ in range(cfg["seq_warm"]):
            post(conn, NOOP_BODY)
    names = list(servers)
    rounds: dict[str, list[float]] = {name: [] for name in names}
    failed = dict.fromkeys(names, 0)
    for r in range(cfg["lat_rounds"]):
        for name in names[r % len(names):] + names[:r % len(names)]:
            lat = []
            for _ in range(cfg["lat_n"]):
                t0 = time.perf_counter()
                status, data = post(conns[name], NOOP_BODY)
                lat.append(time.perf_counter() - t0)
                failed[name] += not succeeded(status, data)  # (coglet: a 409 now and then)
            rounds[name].append(c.percentile(lat, 50) * 1e6)
    for conn in conns.values():
        conn.close()
    return {"p50_us_rounds": rounds, "p50_us": {n: c.median(v) for n, v in rounds.items()},
            "failed": failed}


def round_ratio(inter: dict[str, Any], a: str, b: str) -> float:
    rounds = inter["p50_us_rounds"]
    return c.median([x / y for x, y in zip(rounds[a], rounds[b])])


def concurrent(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    """``conns`` threads, one keep-alive connection each, posting back to back."""
    counts = {"ok": 0, "409": 0, "429": 0, "other": 0, "errors": 0}
    lock = threading.Lock()
    phase = {"measure": False, "stop": False}
    barrier = threading.Barrier(cfg["conns"] + 1)

    worst: list[float] = []  # each thread's longest request while measuring
    slow: list[int] = []  # each thread's requests over SLOW_S

    def run() -> None:
        local = {k: 0 for k in counts}
        longest, over = 0.0, 0
        conn = server.conn()
        barrier.wait()
        while not phase["stop"]:
            measuring = phase["measure"]
            try:
                t0 = time.perf_counter()
                status, data = post(conn, NOOP_BODY)
                took = time.perf_counter() - t0
                if measuring:
                    longest = max(longest, took)
                    over += took > SLOW_S
                key = ("ok" if succeeded(status, data) else
                       str(status) if status in (409, 429) else "other")
            except (OSError, http.client.HTTPException):
                key = "errors"
                conn.close()
                conn = server.conn()
            if measuring and not phase["stop"]:
                local[key] += 1
        conn.close()
        with lock:
            for k, v in local.items():
                counts[k] += v
            worst.append(longest)
            slow.append(over)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(cfg["conns"])]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(cfg["conc_warm_s"])
    cpu = c.cpu_clock(server.proc.pid)  # the server process's own CPU (not its workers')
    phase["measure"] = True
    t0 = time.perf_counter()
    cpu0 = cpu()
    time.sleep(cfg["conc_s"])
    phase["stop"] = True
    cpu_ns = cpu() - cpu0
    wall = time.perf_counter() - t0
    for t in threads:
        t.join(60)
    answers = sum(counts.values())
    return {**counts, "seconds": wall, "ok_per_s": counts["ok"] / wall,
            "answers_per_s": answers / wall, "conns": cfg["conns"],
            "server_cpu_us_per_answer": cpu_ns / 1e3 / answers if answers else None,
            "worst_ms": max(worst) * 1e3 if worst else None, "slow": sum(slow)}


def big_echo(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    text = "x" * cfg["big_bytes"]
    body = json.dumps({"input": {"text": text}}).encode()
    times: list[float] = []
    conn = server.conn(timeout=120)
    for _ in range(cfg["big_reps"]):
        t0 = time.perf_counter()
        status, data = post(conn, body)
        times.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"{server.name}: 50 MB echo answered {status}: {data[:300]!r}")
        out = json.loads(data)
        if out.get("status") != "succeeded" or len(out.get("output") or "") != len(text):
            raise RuntimeError(f"{server.name}: 50 MB echo came back wrong: "
                               f"{str(out)[:300]}")
    conn.close()
    return {"ms": [t * 1e3 for t in times], "median_ms": c.median(times) * 1e3,
            "input_bytes": len(text), "body_bytes": len(body), "reply_bytes": len(data)}


def _payload(cfg: dict[str, Any]) -> bytes:
    return os.urandom(cfg["big_bytes"])


def _prediction(server: Server, conn: http.client.HTTPConnection, body: bytes,
                headers: dict[str, str]) -> dict[str, Any]:
    conn.request("POST", "/predictions", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{server.name}: the file round trip answered {resp.status}: "
                           f"{data[:300]!r}")
    out = json.loads(data)
    if out.get("status") != "succeeded":
        raise RuntimeError(f"{server.name}: the file round trip failed: {str(out)[:300]}")
    return out


def _from_data_url(url: str) -> bytes:
    head, _, b64 = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise RuntimeError(f"not a base64 data: URL: {url[:80]!r}")
    return base64.b64decode(b64)


def file_data_urls(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    """The file as a data: URL in the JSON body; the output a data: URL in the answer."""
    payload = _payload(cfg)
    body = json.dumps({"input": {"doc": "data:application/octet-stream;base64,"
                                 + base64.b64encode(payload).decode()}}).encode()
    times: list[float] = []
    conn = server.conn(timeout=120)
    for _ in range(cfg["big_reps"]):
        t0 = time.perf_counter()
        out = _prediction(server, conn, body, HEADERS)
        times.append(time.perf_counter() - t0)
        if _from_data_url(out["output"]) != payload:
            raise RuntimeError(f"{server.name}: the file came back different")
    conn.close()
    return {"ms": [t * 1e3 for t in times], "median_ms": c.median(times) * 1e3,
            "file_bytes": len(payload), "body_bytes": len(body)}


def file_upload_link(server: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    """The file as a multipart upload; the output a /files link, downloaded in the timing."""
    payload = _payload(cfg)
    boundary = "corral-bench-" + os.urandom(8).hex()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"doc\"; "
            f"filename=\"doc.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    times: list[float] = []
    conn = server.conn(timeout=120)
    for _ in range(cfg["big_reps"]):
        t0 = time.perf_counter()
        out = _prediction(server, conn, body, headers)
        link = out["output"]
        path = link[link.index("/files/"):]
        conn.request("GET", path)
        resp = conn.getresponse()
        got = resp.read()
        times.append(time.perf_counter() - t0)
        if resp.status != 200 or got != payload:
            raise RuntimeError(f"{server.name}: the download of {link} answered "
                               f"{resp.status} with {len(got)} bytes")
    conn.close()
    return {"ms": [t * 1e3 for t in times], "median_ms": c.median(times) * 1e3,
            "file_bytes": len(payload), "body_bytes": len(body)}


# -- the run ------------------------------------------------------------------------------


def measure_all(cfg: dict[str, Any], py: str | None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    log("sequential latency, interleaved rounds: corral sync, bare Starlette"
        + (", coglet sync" if py else ""))
    with contextlib.ExitStack() as stack:
        servers = {"corral_sync1": stack.enter_context(corral_server("sync1")),
                   "bare": stack.enter_context(corral_server("bare")),
                   "bare_pipe": stack.enter_context(corral_server("bare_pipe"))}
        if py:
            servers["coglet_sync1"] = stack.enter_context(coglet_server(py, "Predictor", 1))
        res["interleaved"] = interleaved_latency(servers, cfg)
    log("bare Starlette floor")
    with corral_server("bare") as s:
        res["bare"] = {"sequential": sequential(s, cfg), "concurrent": concurrent(s, cfg),
                       "big": big_echo(s, cfg)}
    log("bare Starlette forwarding to a Pipe worker: the floor with a worker process")
    sustain = dict(cfg, conc_s=cfg["sustain_s"])
    with corral_server("bare_pipe") as s:
        res["bare_pipe"] = {"sequential": sequential(s, cfg), "concurrent": concurrent(s, cfg),
                            "sustained": concurrent(s, sustain)}
    log("corral's server with an instant runner (no worker): its own request handling")
    with corral_server("instant") as s:
        res["corral_instant"] = {"concurrent": concurrent(s, cfg)}
    log("corral file round trip: multipart upload in, /files link out")
    with corral_server("files_url") as s:
        res["corral_files_url"] = {"file": file_upload_link(s, cfg)}
    log("corral file round trip: data: URLs both ways")
    with corral_server("files_data") as s:
        res["corral_files_data"] = {"file": file_data_urls(s, cfg)}
    log("corral sync, 1 worker, 1 slot")
    with corral_server("sync1") as s:
        res["corral_sync1"] = {"sequential": sequential(s, cfg), "big": big_echo(s, cfg)}
    log("corral async, 1 worker, 8 slots (then sustained load: the longest request)")
    with corral_server("async8") as s:
        res["corral_async8"] = {"sequential": sequential(s, cfg),
                                "concurrent": concurrent(s, cfg),
                                "sustained": concurrent(s, sustain)}
    log("corral Pool, 2 sync workers")
    with corral_server("pool2") as s:
        res["corral_pool2"] = {"sequential": sequential(s, cfg),
                               "concurrent": concurrent(s, cfg)}
    if py:
        log("coglet sync, 1 slot")
        with coglet_server(py, "Predictor", 1) as s:
            res["coglet_sync1"] = {"sequential": sequential(s, cfg),
                                   "concurrent": concurrent(s, cfg), "big": big_echo(s, cfg)}
        log("coglet file round trip: data: URLs both ways")
        with coglet_server(py, "FilePredictor", 1, "openapi_files.json") as s:
            res["coglet_files"] = {"file": file_data_urls(s, cfg)}
        log("coglet async, COG_MAX_CONCURRENCY=8")
        with coglet_server(py, "AsyncPredictor", 8) as s:
            res["coglet_async8"] = {"sequential": sequential(s, cfg),
                                    "concurrent": concurrent(s, cfg)}
    return res


def table_rows(res: dict[str, Any], have_coglet: bool, judge: bool = True
               ) -> list[dict[str, Any]]:
    """The table; ``judge`` False (a smoke run): the floor rows' targets are not judged."""
    rows = []

    def row(metric, unit, cor, base_name, base, target="-", met=None, ratio=None):
        rows.append({"metric": metric, "unit": unit, "corral": cor, "baseline_name": base_name,
                     "baseline": base, "ratio": c.ratio(cor, base) if ratio is None else ratio,
                     "target": target, "met": met})

    inter = res["interleaved"]
    lat = inter["p50_us"]

    s1 = res["corral_sync1"]["sequential"]
    a8 = res["corral_async8"]["concurrent"]
    p2 = res["corral_pool2"]["concurrent"]
    big = res["corral_sync1"]["big"]["median_ms"]
    mb = res["corral_sync1"]["big"]["input_bytes"] / 1e6
    if have_coglet:
        cs, cc, ca = (res["coglet_sync1"]["sequential"], res["coglet_sync1"]["concurrent"],
                      res["coglet_async8"]["concurrent"])
        r = round_ratio(inter, "corral_sync1", "coglet_sync1")
        row(f"sequential no-op latency p50, 1 connection (sync), median of "
            f"{len(inter['p50_us_rounds']['bare'])} interleaved rounds (failed: corral "
            f"{inter['failed']['corral_sync1']}, coglet {inter['failed']['coglet_sync1']})", "us",
            lat["corral_sync1"], "coglet sync", lat["coglet_sync1"], "<= 0.33x",
            r <= TARGET_P50, ratio=r)
        row("sequential no-op latency p90, 1 connection (sync), one run each", "us",
            s1["p90_us"],
            "coglet sync", cs["p90_us"])
        row("sequential pred/s, 1 connection (sync)", "pred/s", s1["pred_per_s"],
            "coglet sync", cs["pred_per_s"])
        r = c.ratio(a8["ok_per_s"], ca["ok_per_s"])
        row(f"successful pred/s, 8 connections, async 8 slots (corral 409+429: "
            f"{a8['409'] + a8['429']}, coglet 409: {ca['409']})", "pred/s", a8["ok_per_s"],
            "coglet async x8", ca["ok_per_s"], ">= 4x, no 409",
            r >= TARGET_CONC and a8["409"] == 0 and a8["429"] == 0 and a8["errors"] == 0)
        r = c.ratio(p2["ok_per_s"], cc["ok_per_s"])
        row(f"successful pred/s, 8 connections, Pool of 2 sync workers vs coglet sync "
            f"(corral 409+429: {p2['409'] + p2['429']}, coglet 409: {cc['409']})", "pred/s",
            p2["ok_per_s"], "coglet sync x1", cc["ok_per_s"], ">= 4x, no 409",
            r >= TARGET_CONC and p2["409"] == 0 and p2["429"] == 0 and p2["errors"] == 0)
        cf = res["coglet_files"]["file"]["median_ms"]
        up = res["corral_files_url"]["file"]["median_ms"]
        du = res["corral_files_data"]["file"]["median_ms"]
        row(f"{mb:g} MB file round trip: corral multipart upload in, /files link out "
            f"(download included) vs coglet data: URLs", "ms", up, "coglet data: URLs", cf,
            "<= 0.25x", c.ratio(up, cf) <= TARGET_BIG)
        row(f"{mb:g} MB file round trip, data: URLs both ways", "ms", du,
            "coglet data: URLs", cf)
        cb = res["coglet_sync1"]["big"]["median_ms"]
        row(f"{mb:g} MB JSON string echo round trip (no files)", "ms", big, "coglet sync",
            cb)
    b = res["bare"]
    row("sequential no-op latency p50, 1 connection (sync), interleaved rounds", "us",
        lat["corral_sync1"], "bare Starlette", lat["bare"],
        ratio=round_ratio(inter, "corral_sync1", "bare"))
    if have_coglet:
        row("sequential no-op latency p50, interleaved rounds: the floor itself", "us",
            lat["bare"], "coglet sync", lat["coglet_sync1"],
            ratio=round_ratio(inter, "bare", "coglet_sync1"))
    row("successful pred/s, 8 connections, async 8 slots", "pred/s", a8["ok_per_s"],
        "bare Starlette", b["concurrent"]["ok_per_s"])
    row("successful pred/s, 8 connections, Pool of 2 sync workers", "pred/s",
        p2["ok_per_s"], "bare Starlette", b["concurrent"]["ok_per_s"])
    row(f"{mb:g} MB string echo round trip", "ms", big, "bare Starlette",
        b["big"]["median_ms"])
    # Issue 19's floors: the same route forwarding to a worker process over a Pipe.
    bp = res["bare_pipe"]
    r = round_ratio(inter, "corral_sync1", "bare_pipe")
    row("sequential no-op latency p50, 1 connection (sync), interleaved rounds", "us",
        lat["corral_sync1"], "bare Starlette + Pipe worker", lat["bare_pipe"],
        f"<= {TARGET_P50_PIPE}x", r <= TARGET_P50_PIPE if judge else None, ratio=r)
    r = c.ratio(a8["ok_per_s"], bp["concurrent"]["ok_per_s"])
    row("successful pred/s, 8 connections, async 8 slots", "pred/s", a8["ok_per_s"],
        "bare Starlette + Pipe worker", bp["concurrent"]["ok_per_s"],
        f">= {TARGET_CONC_PIPE}x", r >= TARGET_CONC_PIPE if judge else None)
    # Where the server's CPU goes (its own process, 8 connections, per answer): the bare
    # route is uvicorn + Starlette; the instant runner adds corral's request handling; the
    # async worker adds the call to a worker process.
    cpu = "server_cpu_us_per_answer"
    bare_cpu = b["concurrent"][cpu]
    inst = res["corral_instant"]["concurrent"][cpu]
    row("server-process CPU per answer, 8 connections: corral with an instant runner (no "
        "worker)", "us", inst, "bare Starlette", bare_cpu, f"<= {TARGET_CPU_INSTANT}x",
        c.ratio(inst, bare_cpu) <= TARGET_CPU_INSTANT if judge else None)
    row("successful pred/s, 8 connections: corral with an instant runner (no worker)",
        "pred/s", res["corral_instant"]["concurrent"]["ok_per_s"], "bare Starlette",
        b["concurrent"]["ok_per_s"])
    row("server-process CPU per answer, 8 connections: corral async 8 slots", "us",
        a8[cpu], "bare Starlette", bare_cpu)
    # Stalls (a long garbage collection, a blocked loop) show as the longest request of a
    # sustained run: tens of thousands of predictions, past what retention keeps (how many
    # took over SLOW_S: "slow" in the JSON).
    sa, sp = res["corral_async8"]["sustained"], bp["sustained"]
    secs = f"{sa['seconds']:.2g} s"
    row(f"longest request, 8 connections for {secs}, async 8 slots", "ms", sa["worst_ms"],
        "bare Starlette + Pipe worker", sp["worst_ms"])
    return rows


def detail_table(res: dict[str, Any]) -> str:
    lines = ["| server | seq p50 us | seq p90 us | seq pred/s | 8 conns ok/s | 409 | 429 | "
             "other | errors | server CPU us/answer | big echo ms | file round trip ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: |"]
    for name, r in res.items():
        if name == "interleaved":
            continue
        s, k, b, f = r.get("sequential"), r.get("concurrent"), r.get("big"), r.get("file")
        lines.append(
            f"| {name} | {c.fmt(s and s['p50_us'])} | {c.fmt(s and s['p90_us'])} | "
            f"{c.fmt(s and s['pred_per_s'])} | {c.fmt(k and k['ok_per_s'])} | "
            + " | ".join(str(k[x]) if k else "-" for x in ("409", "429", "other", "errors"))
            + f" | {c.fmt(k and k['server_cpu_us_per_answer'])}"
            + f" | {c.fmt(b and b['median_ms'])} | {c.fmt(f and f['median_ms'])} |")
    return "\n".join(lines)


def render_md(data: dict[str, Any]) -> str:
    m = data["meta"]
    out = [
        "# corral server benchmark (vs coglet)", "",
        f"{m['date']}, corral {m['corral_commit']}, {m['mode']} run, {m['wall_s']:.0f} s. "
        f"Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"{m['platform']}; load average at start {m['loadavg_at_start']}. "
        f"coglet: {data['coglet'] or 'absent'}.", "",
        "Client: `http.client` keep-alive connections (one per thread) in the benchmark "
        "process, on the same machine as the servers (loopback). Ratios are corral / "
        "baseline. Each server runs alone while it is measured, except for the sequential "
        "latency p50 rows: corral sync, the bare floor and coglet sync run side by side "
        "(idle but one) and are measured in alternating rounds, the ratio being the median "
        "of the per-round ratios, so that a noisy neighbour on this shared machine cannot "
        "favour one of them.", "",
    ]
    if data.get("coglet_note"):
        out += [f"**{data['coglet_note']}**", ""]
    out += [c.markdown_table(data["rows"]), "", "Every server:", "", detail_table(data["raw"]),
            "", "Notes:", ""]
    out += [f"* {n}" for n in data["notes"]]
    out += c.verdict_lines(data["rows"])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, cfg, out_dir = c.command_line(__doc__, "server.json and server.md (--smoke: "
                                        "corral and the bare floor only, no coglet)",
                                        FULL, SMOKE, argv)
    t0 = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"

    py = None if args.smoke else coglet_python()
    note = None
    coglet_version = None
    if py:
        coglet_version = subprocess.run(
            [py, "-c", "import coglet; print(coglet.__version__)"], capture_output=True,
            text=True, timeout=60).stdout.strip() + f" ({py})"
    else:
        note = ("coglet skipped: " + ("--smoke runs corral only" if args.smoke else
                f"no python with coglet and cog at $COGLET_PYTHON or {DEFAULT_COGLET_PYTHON}")
                + "; corral is compared with the bare Starlette floors only, and "
                + ("no target is judged." if args.smoke else
                   "only the targets against them (issue 19) are judged."))
        log(note)

    raw = measure_all(cfg, py)
    meta["wall_s"] = time.perf_counter() - t0
    results: dict[str, Any] = {"meta": meta, "config": cfg, "coglet": coglet_version,
                               "coglet_note": note, "raw": raw}
    results["leftover_children"] = c.leftover_children(log)
    results["rows"] = table_rows(raw, py is not None, judge=not args.smoke)
    results["targets"] = {"met": c.met(results["rows"])}
    results["notes"] = [
        "The file round trip: the predictor copies its input file to a new file next to it "
        "and returns that (the same code for both). coglet takes the file as a data: URL in "
        "the JSON body and answers a data: URL (without an upload server it has no other "
        "way); corral takes a multipart upload, streamed to disk, and answers a /files link "
        "that the client then downloads, inside the timing. corral with data: URLs both ways "
        "is the like-for-like row. Bodies are built before the timer starts; the answer's "
        "bytes are checked after it stops.",
        "coglet allows concurrency > 1 only with an async predict; its sync case is 1 slot, "
        "so corral's Pool of 2 sync workers is compared with coglet sync at 1 slot (both "
        "at 8 connections). coglet answers 409 when its slots are busy; those are counted, "
        "not successful.",
        "corral runs as `corral.server.serve()` does (JSON access lines on stderr, sent to "
        "/dev/null here); coglet with a hand-written .cog/openapi_schema.json (inputs "
        "validated).",
        "The bare Starlette floor is a route on uvicorn that parses the JSON and echoes "
        "the text, with no worker process: what any Python ASGI server costs. The p50 "
        "target (<= 0.33x coglet) lies at or below that floor (row \"the floor itself\"): "
        "no server on uvicorn + Starlette meets it, whatever it does behind the route.",
        "coglet answers some requests of a single sequential connection with 409 (its slot "
        "is freed after the answer goes out); they count as failed, and their latency, "
        "shorter than a prediction's, stays in coglet's p50, which favours coglet.",
    ]
    c.write_results(out_dir, "server", results, render_md(results))
    log(f"wrote {out_dir}/server.json and server.md in {meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
