"""Plugin manager overhead: load-to-ready and per-call cost against a bare Worker.

    .venv/bin/python benchmarks/bench_plugins.py            # full run
    .venv/bin/python benchmarks/bench_plugins.py --quick    # tiny counts (the smoke test)

* **load to ready**: ``PluginManager.load()`` (discovery, resource check, a Worker with
  the config check, start) + ``unload()``, against ``Worker(target).start()`` + ``stop()``
  of the same target; interleaved, medians over the rounds.
* **per call**: a no-op call through ``manager.call(name, ...)`` and through a handle,
  against ``Worker.call`` on a bare worker of the same target, in interleaved rounds;
  target: within 10 % (ratio <= 1.10).

Environment build times are the environment layer's benchmark. Results:
benchmarks/results/plugins.{json,md} (``--quick``: benchmarks/results/smoke/; or ``--out``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)

import _common as c  # noqa: E402

import corral  # noqa: E402
from corral.plugins.manager import PluginManager  # noqa: E402

TARGET_CALL_RATIO = 1.10

CODE = '''
class Noop:
    def setup(self, size: int = 1):
        self.size = size

    def noop(self):
        return None
'''

FULL = {"load_rounds": 15, "call_rounds": 15, "calls_per_round": 2000}
QUICK = {"load_rounds": 2, "call_rounds": 2, "calls_per_round": 50}


def log(msg: str) -> None:
    print(f"[bench_plugins] {msg}", file=sys.stderr, flush=True)


def make_plugin(root: str) -> str:
    folder = os.path.join(root, "noop")
    os.makedirs(folder)
    with open(os.path.join(folder, "noop.py"), "w") as f:
        f.write(CODE)
    with open(os.path.join(folder, "corral.toml"), "w") as f:
        f.write('name = "noop"\nversion = "1"\ntarget = "noop.py:Noop"\n')
    return folder


def load_to_ready(pm: PluginManager, target: str, rounds: int) -> dict[str, Any]:
    manager_ms, worker_ms = [], []
    for r in range(rounds):
        for which in (("manager", "worker") if r % 2 == 0 else ("worker", "manager")):
            t0 = time.perf_counter()
            if which == "manager":
                pm.load("noop", {"size": 2})
                manager_ms.append((time.perf_counter() - t0) * 1e3)
                pm.unload("noop")
            else:
                w = corral.Worker(target, config={"size": 2}).start()
                worker_ms.append((time.perf_counter() - t0) * 1e3)
                w.stop()
    m, w = c.median(manager_ms), c.median(worker_ms)
    return {"manager_ms": m, "worker_ms": w, "ratio": m / w,
            "manager_spread": c.spread(manager_ms), "worker_spread": c.spread(worker_ms)}


def per_call(pm: PluginManager, target: str, rounds: int, n: int) -> dict[str, Any]:
    bare = corral.Worker(target, config={"size": 2}).start()
    handle = pm.load("noop", {"size": 2})
    ways = {
        "worker": lambda: bare.call("noop"),
        "manager": lambda: pm.call("noop", "noop"),
        "handle": lambda: handle.call("noop"),
    }
    per_round: dict[str, list[float]] = {k: [] for k in ways}
    try:
        for fn in ways.values():  # warm up
            for _ in range(min(n, 200)):
                fn()
        order = list(ways)
        for r in range(rounds):
            for name in order[r % 3:] + order[:r % 3]:  # rotate who goes first
                fn = ways[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                per_round[name].append((time.perf_counter() - t0) / n * 1e6)
    finally:
        bare.stop()
        pm.unload("noop")
    out: dict[str, Any] = {f"{k}_us": c.median(v) for k, v in per_round.items()}
    # The ratio per round (same moment, same machine load), then its median.
    for k in ("manager", "handle"):
        out[f"{k}_ratio"] = c.median(a / b for a, b in zip(per_round[k], per_round["worker"]))
    out["rounds"] = per_round
    return out


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    ld, pc = res["load"], res["call"]

    def row(metric, unit, corral_v, base_name, base_v, target=None, met=None, ratio=None):
        return {"metric": metric, "unit": unit, "corral": corral_v, "baseline_name": base_name,
                "baseline": base_v, "ratio": ratio if ratio is not None else
                c.ratio(corral_v, base_v), "target": target or "-", "met": met}

    return [
        row("load to ready: `PluginManager.load()` vs `Worker.start()`", "ms",
            ld["manager_ms"], "bare Worker", ld["worker_ms"]),
        row("no-op call: `manager.call(name, method)`", "us", pc["manager_us"], "Worker.call",
            pc["worker_us"], f"<= {TARGET_CALL_RATIO:.2f}x",
            pc["manager_ratio"] <= TARGET_CALL_RATIO, pc["manager_ratio"]),
        row("no-op call: `handle.call(method)`", "us", pc["handle_us"], "Worker.call",
            pc["worker_us"], f"<= {TARGET_CALL_RATIO:.2f}x",
            pc["handle_ratio"] <= TARGET_CALL_RATIO, pc["handle_ratio"]),
    ]


def render_md(data: dict[str, Any]) -> str:
    meta, cfg = data["meta"], data["config"]
    lines = [
        "# corral plugins benchmark",
        "",
        f"{meta['mode']} run, {meta['date']}, Python {meta['python']}, "
        f"{meta['cpu_count']} CPUs, commit {meta.get('corral_commit')}.",
        "",
        c.markdown_table(data["rows"]),
        "",
        f"Load to ready: {cfg['load_rounds']} interleaved rounds, medians; the manager's "
        "figure includes discovery (one folder), the resource check and the worker-side "
        "config check. Calls: a no-op method, "
        f"{cfg['calls_per_round']} calls per round, {cfg['call_rounds']} rounds rotating "
        "which way goes first; the ratio is the median of the per-round ratios.",
    ]
    lines += c.verdict_lines(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, cfg, out_dir = c.command_line(__doc__, "plugins.json and plugins.md", FULL, QUICK,
                                        argv)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "quick" if args.smoke else "full"
    results: dict[str, Any] = {"meta": meta, "config": cfg}
    with tempfile.TemporaryDirectory(prefix="corral-bench-plugins-") as root:
        folder = make_plugin(root)
        target = os.path.join(folder, "noop.py") + ":Noop"
        with PluginManager([root], plugins_dir=os.path.join(root, "none"),
                           entry_points=False) as pm:
            log("load to ready")
            results["load"] = load_to_ready(pm, target, cfg["load_rounds"])
            log("per-call overhead")
            results["call"] = per_call(pm, target, cfg["call_rounds"], cfg["calls_per_round"])
    results["leftover_children"] = c.leftover_children(log)
    meta["wall_s"] = time.perf_counter() - t_start
    results["rows"] = table_rows(results)
    results["targets"] = {
        "call_ratio_max": TARGET_CALL_RATIO,
        "met": c.met(results["rows"]),
    }
    c.write_results(out_dir, "plugins", results, render_md(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
