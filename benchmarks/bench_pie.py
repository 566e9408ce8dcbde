"""PIE's protocol side by side: corral's endpoint against a real PIE server, one pie-client.

The same pie-client 0.5.3 (this environment's) drives both servers with the same operations
and programs (pie_programs/bench_fns.py, the bodies of ../shared/peers/pie/inf/bench_fns.py):
ping, launch -> return of a function returning a dict, a 50 MB ``transfer_file`` the program
hashes, 1000 printed lines, a signal -> message round trip. corral serves them with
``python -m corral.remote.pie`` (each launch a fresh corral worker process); PIE with
pie-server 0.5.2, booted by ../shared/peers/pie/serve.py from the venv that
../shared/peers/pie/setup.sh makes (``$PIE_PROBE``, default /tmp/pie-peer).

    .venv/bin/python benchmarks/bench_pie.py            # both (PIE when set up), full counts
    .venv/bin/python benchmarks/bench_pie.py --no-pie   # corral alone
    .venv/bin/python benchmarks/bench_pie.py --smoke    # corral alone, tiny counts (CI)

Without a live PIE, the baseline column holds PIE's figures measured on this machine kind
(../shared/peers/pie/README.md), and says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

sys.path.insert(0, os.path.join(c.HERE, "pie_programs"))

FULL = {"ping": 500, "warmup": 5, "launches": 50, "transfer_mb": 50, "lines": 1000,
        "signals": 20, "rounds": 3}
SMOKE = {"ping": 20, "warmup": 1, "launches": 5, "transfer_mb": 2, "lines": 100,
         "signals": 3, "rounds": 1}
PEER = os.path.abspath(os.environ.get("PIE_PEER", "/work/shared/peers/pie"))
PIE_PROBE = os.environ.get("PIE_PROBE", "/tmp/pie-peer")
# ../shared/peers/pie/README.md, the middle of three boots (2 vCPU), for runs without PIE.
PIE_README = {"ping_ms": 0.38, "launch_ms": 7.6, "transfer_ms": 590.0, "lines_ms": 120.0,
              "signal_ms": 0.49}
STEP = 120.0  # seconds any one step may take


def log(msg: str) -> None:
    print(f"[bench_pie] {msg}", file=sys.stderr, flush=True)


async def drain(proc: Any, limit: float = STEP) -> tuple[list, tuple]:
    from pie_client import Event

    events = []
    deadline = time.perf_counter() + limit
    while True:
        ev, val = await asyncio.wait_for(proc.recv(), max(0.001, deadline - time.perf_counter()))
        events.append((ev, val, time.perf_counter()))
        if ev in (Event.Return, Event.Error):
            return events, (ev.value, val)


async def measure(url: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The five operations against the server at ``url``: figures in ms."""
    import blake3
    from bench_fns import echo_signal, print_lines, recv_file_len, ret_dict
    from pie_client import Event, PieClient

    res: dict[str, Any] = {}
    async with PieClient(url, identity="default/bench") as cl:
        for fn in (ret_dict, recv_file_len, print_lines, echo_signal):
            if not await cl.check_program(fn.program):
                await cl.install_program_bytes(fn.source.encode(), fn.manifest_toml())
        for _ in range(10):
            await asyncio.wait_for(cl.ping(), STEP)
        xs = []
        for _ in range(cfg["ping"]):
            t = time.perf_counter()
            await asyncio.wait_for(cl.ping(), STEP)
            xs.append((time.perf_counter() - t) * 1e3)
        res["ping"] = _stats(xs)
        log(f"  ping {res['ping']['median_ms']:.3f} ms")

        for i in range(cfg["warmup"]):
            _, term = await drain(await cl.launch_process(ret_dict.program, {"x": i}))
        xs, bad = [], 0
        for i in range(cfg["launches"]):
            t = time.perf_counter()
            proc = await asyncio.wait_for(cl.launch_process(ret_dict.program, {"x": i}), STEP)
            events, term = await drain(proc)
            xs.append((events[-1][2] - t) * 1e3)
            bad += term[0] != "return" or json.loads(term[1]) != {"ok": True, "x": i}
        res["launch"] = _stats(xs) | {"bad": bad}
        log(f"  launch -> return {res['launch']['median_ms']:.2f} ms")

        size = cfg["transfer_mb"] * 1024 * 1024
        payload = os.urandom(size)
        want = hashlib.sha256(payload).hexdigest()
        proc = await asyncio.wait_for(cl.launch_process(recv_file_len.program,
                                                        {"expect": size}), STEP)
        first = await asyncio.wait_for(proc.recv(), STEP)
        assert first == (Event.Message, "ready"), first
        t = time.perf_counter()
        await proc.transfer_file(payload)
        t_sent = time.perf_counter()
        events, term = await drain(proc, 300)
        t_end = time.perf_counter()
        got = json.loads(term[1]) if term[0] == "return" else {}
        res["transfer"] = {"bytes": size, "ms": (t_end - t) * 1e3,
                           "send_ms": (t_sent - t) * 1e3,
                           "ok": got.get("len") == size and got.get("sha256") == want,
                           "client_blake3_ms": _timed(lambda: blake3.blake3(payload))}
        log(f"  transfer {cfg['transfer_mb']} MB {res['transfer']['ms']:.0f} ms "
            f"ok={res['transfer']['ok']}")

        n = cfg["lines"]
        t = time.perf_counter()
        proc = await asyncio.wait_for(cl.launch_process(print_lines.program, {"n": n}), STEP)
        events, term = await drain(proc)
        outs = [v for e, v, _ in events if e == Event.Stdout]
        res["lines"] = {"n": n, "ms": (events[-1][2] - t) * 1e3, "stdout_events": len(outs),
                        "in_order": "".join(outs).splitlines() ==
                        [f"line {i:05d}" for i in range(n)], "terminal": term[0]}
        log(f"  {n} lines {res['lines']['ms']:.1f} ms in {len(outs)} events")

        rounds = cfg["signals"]
        proc = await asyncio.wait_for(cl.launch_process(echo_signal.program,
                                                        {"rounds": rounds}), STEP)
        xs = []
        for i in range(rounds):
            t = time.perf_counter()
            await proc.signal(f"m{i}")
            ev = await asyncio.wait_for(proc.recv(), STEP)
            xs.append((time.perf_counter() - t) * 1e3)
            assert ev == (Event.Message, f"echo:m{i}"), ev
        _, term = await drain(proc)
        res["signal"] = _stats(xs) | {"terminal": term[0]}
        log(f"  signal round trip {res['signal']['median_ms']:.3f} ms")
    return res


def _stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_ms": statistics.median(xs), "p90_ms": c.percentile(xs, 90),
            "p99_ms": c.percentile(xs, 99), "min_ms": min(xs), "max_ms": max(xs)}


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


class Server:
    """A server subprocess that writes its ws URL (or port) to a file once it listens."""

    def __init__(self, argv: list[str], env: dict[str, str], url_file: str, log_path: str,
                 port_only: bool, boot_s: float):
        self.log_path = log_path
        with open(log_path, "wb") as logf:
            self.popen = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + boot_s
        while not os.path.exists(url_file):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[1:3]} did not boot; see {log_path}")
            time.sleep(0.05)
        text = Path(url_file).read_text().strip()
        self.url = f"ws://127.0.0.1:{text}" if port_only else text

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait()


def start_corral(work: str) -> Server:
    port_file = os.path.join(work, "corral-port")
    src = os.path.join(os.path.dirname(c.HERE), "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return Server([sys.executable, "-m", "corral.remote.pie", "--root",
                   os.path.join(work, "programs"), "--port", "0", "--port-file", port_file],
                  env, port_file, os.path.join(work, "corral.log"), True, 60)


def pie_available() -> bool:
    return os.path.exists(os.path.join(PIE_PROBE, "venv", "bin", "python")) and \
        os.path.exists(os.path.join(PIE_PROBE, "q35", "model.safetensors"))


def start_pie(work: str) -> Server:
    home = os.path.join(work, "pie-home")
    xdg = os.path.join(work, "pie-xdg")
    os.makedirs(home)
    os.makedirs(xdg, mode=0o700)
    url_file = os.path.join(work, "pie-url")
    env = dict(os.environ, HOME=home, PIE_HOME=os.path.join(home, ".pie"),
               XDG_RUNTIME_DIR=xdg, RUST_LOG="warn", PIE_URL_FILE=url_file,
               PIE_MODEL_DIR=os.path.join(PIE_PROBE, "q35"), PIE_MAX_LIFE="900")
    return Server([os.path.join(PIE_PROBE, "venv", "bin", "python"),
                   os.path.join(PEER, "serve.py")], env, url_file,
                  os.path.join(work, "pie.log"), False, 240)


def run_rounds(starters: dict[str, Any], work: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Boot every server, then measure them in turn, ``rounds`` times (so that a burst of
    load on this shared machine falls on both, not on one): each figure is the median of
    its rounds, the rounds kept beside it."""
    servers: dict[str, Server] = {}
    out: dict[str, Any] = {}
    try:
        for name, start in starters.items():
            log(f"{name}: booting")
            t = time.perf_counter()
            servers[name] = start(work)
            out[name] = {"boot_s": time.perf_counter() - t, "rounds": []}
            log(f"{name}: {servers[name].url} after {out[name]['boot_s']:.1f} s")
        for r in range(cfg["rounds"]):
            for name, server in servers.items():
                log(f"round {r + 1}/{cfg['rounds']}: {name}")
                out[name]["rounds"].append(asyncio.run(measure(server.url, cfg)))
    finally:
        for server in servers.values():
            server.stop()
    for res in out.values():
        rounds = res["rounds"]
        for key in ("ping", "launch", "signal"):
            res[key] = dict(rounds[0][key], median_ms=statistics.median(
                x[key]["median_ms"] for x in rounds), p90_ms=statistics.median(
                x[key]["p90_ms"] for x in rounds), p99_ms=statistics.median(
                x[key]["p99_ms"] for x in rounds))
        res["launch"]["bad"] = sum(x["launch"]["bad"] for x in rounds)
        for key in ("transfer", "lines"):
            res[key] = dict(rounds[0][key], ms=statistics.median(x[key]["ms"] for x in rounds))
        res["transfer"]["ok"] = all(x["transfer"]["ok"] for x in rounds)
        res["lines"]["in_order"] = all(x["lines"]["in_order"] for x in rounds)
    return out


def _row(metric: str, value: float, base_name: str, base: float | None, target: str,
         factor: float) -> dict[str, Any]:
    ok = None if base is None else value <= base * factor
    return {"metric": metric, "unit": "ms", "corral": value, "baseline_name": base_name,
            "baseline": base, "ratio": None if base is None else c.ratio(value, base),
            "target": target, "met": ok}


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    co = data["corral"]
    pie = data.get("pie")
    if pie is not None:
        name = "PIE 0.5.2 (this run)"
        base = {"ping_ms": pie["ping"]["median_ms"], "launch_ms": pie["launch"]["median_ms"],
                "transfer_ms": pie["transfer"]["ms"], "lines_ms": pie["lines"]["ms"],
                "signal_ms": pie["signal"]["median_ms"]}
    else:
        name = "PIE 0.5.2 (README figures)"
        base = dict(PIE_README)
        if data["config"] != FULL:  # smoke counts: only the per-operation figures compare
            base["transfer_ms"] = base["lines_ms"] = None
    mb, n = data["config"]["transfer_mb"], data["config"]["lines"]
    return [
        _row("ping, median", co["ping"]["median_ms"], name, base["ping_ms"], "<= PIE", 1.0),
        _row("launch -> return, median", co["launch"]["median_ms"], name, base["launch_ms"],
             "<= PIE", 1.0),
        _row(f"{mb} MB transfer_file -> return", co["transfer"]["ms"], name,
             base["transfer_ms"], "<= 1/4 of PIE", 0.25),
        _row(f"{n} printed lines, launch -> return", co["lines"]["ms"], name,
             base["lines_ms"], "<= 1/2 of PIE", 0.5),
        _row("signal -> message round trip, median", co["signal"]["median_ms"], name,
             base["signal_ms"], "<= PIE", 1.0),
    ]


def render_md(data: dict[str, Any]) -> str:
    meta, co = data["meta"], data["corral"]
    pie = data.get("pie")
    lines = [
        f"# corral PIE benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}; corral {meta['corral']} at {meta['corral_commit'] or '?'}; Python "
        f"{meta['python']}; {meta['cpu_count']} CPUs ({meta['cpu_model'] or 'unknown model'});"
        f" 1-minute load average {meta['loadavg_at_start'][0]:.2f} at the start, "
        f"{meta['loadavg_at_end'][0]:.2f} at the end; run took {meta['wall_s']:.0f} s.",
        "",
        c.markdown_table(data["rows"]),
        "",
        "One pie-client 0.5.3 drives both servers in this process with the same programs: "
        f"both booted, then measured in turn, {data['config']['rounds']} rounds; each "
        "figure is the median of its rounds (every round is in pie.json). corral: `python -m corral.remote.pie` (uvicorn + the "
        "Starlette endpoint), each launch a fresh corral worker process forked from a warm "
        "fork server; PIE: pie-server 0.5.2 on Mesa lavapipe (no forward pass runs), each "
        "launch a wasm instance in its server. Launch -> return is from the request to the "
        "`return` event, after "
        f"{data['config']['warmup']} warm-up launches, median of {data['config']['launches']}."
        " The transfer is timed from the first chunk sent to the program's `return` (it "
        "hashes the payload with sha256).",
        "",
        f"corral: {co['lines']['stdout_events']} stdout events for {co['lines']['n']} lines "
        f"(writes merged), in order: {co['lines']['in_order']}; transfer checked: "
        f"{co['transfer']['ok']}; launch p90 {co['launch']['p90_ms']:.2f} ms, p99 "
        f"{co['launch']['p99_ms']:.2f} ms; boot {co['boot_s']:.1f} s.",
    ]
    if pie is not None:
        lines += ["", f"PIE: {pie['lines']['stdout_events']} stdout events, in order: "
                  f"{pie['lines']['in_order']}; transfer checked: {pie['transfer']['ok']}; "
                  f"launch p90 {pie['launch']['p90_ms']:.2f} ms, p99 "
                  f"{pie['launch']['p99_ms']:.2f} ms; boot {pie['boot_s']:.1f} s."]
    else:
        lines += ["", "PIE was not running in this run: its column holds the figures of "
                  "../shared/peers/pie/README.md (same machine kind)."]
    lines += c.verdict_lines(data["rows"])
    lines += ["", "Rerun: `../shared/peers/pie/setup.sh` once (root, ~2 GB RAM), then "
              "`.venv/bin/python benchmarks/bench_pie.py`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def extra(ap: Any) -> None:
        ap.add_argument("--no-pie", action="store_true", help="measure corral alone")

    args, cfg, out_dir = c.command_line(__doc__, "pie.json and pie.md", FULL, SMOKE, argv,
                                        extra)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"
    results: dict[str, Any] = {"meta": meta, "config": cfg}
    starters: dict[str, Any] = {}
    if not args.smoke and not args.no_pie and pie_available():
        starters["pie"] = start_pie
    elif not args.smoke and not args.no_pie:
        log(f"PIE is not set up in {PIE_PROBE}: run {PEER}/setup.sh for a side-by-side run")
    starters["corral"] = start_corral
    with tempfile.TemporaryDirectory(prefix="corral-bench-pie-") as work:
        results.update(run_rounds(starters, work, cfg))
    results["leftover_children"] = c.leftover_children(log)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_at_end"] = list(os.getloadavg())
    results["rows"] = table_rows(results)
    results["targets"] = {"met": c.met(results["rows"])}
    c.write_results(out_dir, "pie", results, render_md(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
