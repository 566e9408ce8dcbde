#!/usr/bin/env python
"""Keeper benchmark: what the keeper (the subreaper that ends a model's subprocesses with its
worker, corral/worker/keeper.py) costs.

    .venv/bin/python benchmarks/bench_children.py            # full run (~1 min, 2 vCPUs)
    .venv/bin/python benchmarks/bench_children.py --smoke    # every measurement, 1-2 reps

Each figure with the keeper against the same without it (``corral.host.process.KEEPER =
False``: the worker is the host's child, as before the keeper), in the same run:

* cold start: ``Worker(targets.py:Empty).start()`` until ready, and its ``stop()``; the two
  variants alternate, and the ratio is the median of the per-pair ratios;
* no-op call latency p50: one Worker of each kind, called alternately (a-b, then b-a);
* memory: the keeper's own RSS and its private part (Private_Clean + Private_Dirty of
  /proc/PID/smaps_rollup: what it adds to the machine; the rest is shared with other
  processes), next to the idle worker's: once it has exec'd its bare interpreter (after
  SLIM_AFTER_S), and in its first second, while it is a fork of the worker.

Writes ``children.json`` and ``children.md`` to ``benchmarks/results/``
(``--smoke``: ``benchmarks/results/smoke/``; or ``--out DIR``).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402

import corral  # noqa: E402
from corral.host import process  # noqa: E402
from corral.worker import keeper as keeper_module  # noqa: E402

TARGETS_FILE = os.path.join(HERE, "targets.py")
NOOP_REF = f"{TARGETS_FILE}:Noop"
EMPTY_REF = f"{TARGETS_FILE}:Empty"

FULL = dict(cold_reps=21, lat_rounds=7, lat_calls=2000, warmup=200)
SMOKE = dict(cold_reps=2, lat_rounds=1, lat_calls=100, warmup=20)

TARGET_COLD_RATIO = 1.15   # start to ready with the keeper <= 1.15x without
TARGET_P50_RATIO = 1.05    # no per-call cost: no-op p50 within noise (<= 1.05x)
TARGET_PRIVATE_MIB = 6.0   # the keeper's private memory
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[bench_children {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def worker(ref: str, keeper: bool) -> corral.Worker:
    process.KEEPER = keeper  # read when the process is started
    try:
        return corral.Worker(ref).start()
    finally:
        process.KEEPER = True


def cold_start(cfg: dict[str, Any]) -> dict[str, Any]:
    samples: dict[str, list[float]] = {k: [] for k in
                                       ("keeper_ms", "bare_ms", "keeper_stop_ms", "bare_stop_ms")}
    for r in range(cfg["cold_reps"]):
        for keeper in ((True, False) if r % 2 else (False, True)):
            name = "keeper" if keeper else "bare"
            t0 = time.perf_counter()
            w = worker(EMPTY_REF, keeper)
            samples[f"{name}_ms"].append((time.perf_counter() - t0) * 1e3)
            assert (w._proc.keeper_pid is not None) == keeper
            t1 = time.perf_counter()
            w.stop()
            samples[f"{name}_stop_ms"].append((time.perf_counter() - t1) * 1e3)
    out: dict[str, Any] = {k: c.median(v) for k, v in samples.items()}
    out["ratio"] = c.median(a / b for a, b in zip(samples["keeper_ms"], samples["bare_ms"]))
    out["stop_ratio"] = c.median(a / b for a, b in zip(samples["keeper_stop_ms"],
                                                        samples["bare_stop_ms"]))
    out["reps"] = cfg["cold_reps"]
    log(f"  cold start: keeper {out['keeper_ms']:.1f} ms, bare {out['bare_ms']:.1f} ms "
        f"({out['ratio']:.2f}x)")
    return out


def latency(cfg: dict[str, Any]) -> dict[str, Any]:
    kept, bare = worker(NOOP_REF, True), worker(NOOP_REF, False)
    try:
        a, b = kept.call, bare.call
        for _ in range(cfg["warmup"]):
            a("noop")
            b("noop")
        clock = time.perf_counter_ns
        rounds = []
        for _ in range(cfg["lat_rounds"]):
            gc.collect()
            n = cfg["lat_calls"]
            ta, tb = [0] * n, [0] * n
            for i in range(n):
                first, second = (a, b) if i & 1 else (b, a)
                t0 = clock()
                first("noop")
                t1 = clock()
                second("noop")
                t2 = clock()
                if i & 1:
                    ta[i], tb[i] = t1 - t0, t2 - t1
                else:
                    tb[i], ta[i] = t1 - t0, t2 - t1
            row = {"keeper_p50_us": c.percentile(ta, 50) / 1e3,
                   "bare_p50_us": c.percentile(tb, 50) / 1e3}
            row["ratio"] = row["keeper_p50_us"] / row["bare_p50_us"]
            rounds.append(row)
        out: dict[str, Any] = {k: c.median(r[k] for r in rounds) for k in rounds[0]}
        out["ratio_spread"] = c.spread([r["ratio"] for r in rounds])
        out["calls_per_round"] = cfg["lat_calls"]
        log(f"  no-op p50: keeper {out['keeper_p50_us']:.1f} us, bare "
            f"{out['bare_p50_us']:.1f} us ({out['ratio']:.2f}x)")
        return out
    finally:
        kept.stop()
        bare.stop()


def private_bytes(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                total += int(rest.split()[0]) * 1024
    return total


def execd(pid: int) -> bool:
    """The keeper has exec'd and is done starting over: it holds its 6 descriptors again
    (stdio, its socket, its self-pipe), the last of them opened as it starts watching."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"keeper.py" not in f.read():
            return False
    return len(os.listdir(f"/proc/{pid}/fd")) == 6


def memory(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keeper just after the start (a fork of the worker), then once it has exec'd its
    bare interpreter and the worker has answered ``lat_calls`` calls."""
    with corral.Worker(NOOP_REF) as w:
        w.call("noop")
        keeper = w._proc.keeper_pid
        out: dict[str, Any] = {"forked_keeper_private_mib": private_bytes(keeper) / MIB,
                               "forked_keeper_rss_mib": c.proc_memory(keeper)["VmRSS"] / MIB}
        deadline = time.monotonic() + 10 * keeper_module.SLIM_AFTER_S
        while not execd(keeper):  # (no event to wait on: another process's state)
            if time.monotonic() > deadline:
                raise RuntimeError("the keeper did not exec")
            time.sleep(0.01)
        for _ in range(cfg["lat_calls"]):
            w.call("noop")
        out.update({
            "keeper_rss_mib": c.proc_memory(keeper)["VmRSS"] / MIB,
            "keeper_private_mib": private_bytes(keeper) / MIB,
            "worker_rss_mib": c.proc_memory(w.pid)["VmRSS"] / MIB,
            "worker_private_mib": private_bytes(w.pid) / MIB,
        })
    log(f"  keeper: RSS {out['keeper_rss_mib']:.1f} MiB, private "
        f"{out['keeper_private_mib']:.1f} MiB (forked: {out['forked_keeper_rss_mib']:.1f}, "
        f"{out['forked_keeper_private_mib']:.1f})")
    return out


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    cold, lat, mem = res["cold_start"], res["latency"], res["memory"]

    def row(metric, unit, cor, base_name, base, ratio, target="-", met=None):
        return {"metric": metric, "unit": unit, "corral": cor, "baseline_name": base_name,
                "baseline": base, "ratio": ratio, "target": target, "met": met}

    return [
        row("cold start to ready", "ms", cold["keeper_ms"], "no keeper", cold["bare_ms"],
            cold["ratio"], f"<= {TARGET_COLD_RATIO}x", cold["ratio"] <= TARGET_COLD_RATIO),
        row("stop()", "ms", cold["keeper_stop_ms"], "no keeper", cold["bare_stop_ms"],
            cold["stop_ratio"]),
        row("no-op call latency p50", "us", lat["keeper_p50_us"], "no keeper",
            lat["bare_p50_us"], lat["ratio"], f"<= {TARGET_P50_RATIO}x",
            lat["ratio"] <= TARGET_P50_RATIO),
        row("keeper private memory", "MiB", mem["keeper_private_mib"], "idle worker",
            mem["worker_private_mib"], c.ratio(mem["keeper_private_mib"],
                                               mem["worker_private_mib"]),
            f"<= {TARGET_PRIVATE_MIB:g} MiB", mem["keeper_private_mib"] <= TARGET_PRIVATE_MIB),
        row("keeper RSS", "MiB", mem["keeper_rss_mib"], "idle worker", mem["worker_rss_mib"],
            c.ratio(mem["keeper_rss_mib"], mem["worker_rss_mib"])),
        row(f"keeper private memory in its first {keeper_module.SLIM_AFTER_S:g} s (a fork)",
            "MiB", mem["forked_keeper_private_mib"], "idle worker", mem["worker_private_mib"],
            c.ratio(mem["forked_keeper_private_mib"], mem["worker_private_mib"])),
    ]


def render_md(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        f"# corral keeper benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}; corral {meta['corral']} at {meta['corral_commit'] or '?'}; "
        f"Python {meta['python']}; {meta['cpu_count']} CPUs "
        f"({meta['cpu_model'] or 'unknown model'}); run took {meta['wall_s']:.0f} s. "
        "Rerun: `.venv/bin/python benchmarks/bench_children.py`.",
        "",
        c.markdown_table(data["rows"]),
        "",
        "corral = with the keeper (the default on Linux); baseline = the same without it "
        "(`corral.host.process.KEEPER = False`), in the same run. Ratios are medians of "
        "per-pair (cold start) or per-round (latency) ratios. Private memory is what the "
        "process alone holds (the rest of its RSS is shared: libpython, libc).",
    ]
    lines += c.verdict_lines(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, cfg, out_dir = c.command_line(__doc__, "children.json and children.md", FULL, SMOKE,
                                        argv)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"
    results: dict[str, Any] = {"meta": meta, "config": cfg}
    # Warm up what happens once per host process (imports, the spawner and timer threads).
    worker(EMPTY_REF, True).stop()
    worker(EMPTY_REF, False).stop()
    log("cold start")
    results["cold_start"] = cold_start(cfg)
    log("no-op latency")
    results["latency"] = latency(cfg)
    log("memory")
    results["memory"] = memory(cfg)
    results["leftover_children"] = c.leftover_children(log)
    meta["wall_s"] = time.perf_counter() - t_start
    results["rows"] = table_rows(results)
    results["targets"] = {
        "cold_start_ratio_max": TARGET_COLD_RATIO,
        "noop_p50_ratio_max": TARGET_P50_RATIO,
        "keeper_private_mib_max": TARGET_PRIVATE_MIB,
        "met": c.met(results["rows"]),
    }
    c.write_results(out_dir, "children", results, render_md(results))
    log(f"wrote {os.path.join(out_dir, 'children.json')} and children.md in "
        f"{meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
