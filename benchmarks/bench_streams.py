#!/usr/bin/env python
"""Streams and pipelines benchmark (issue 18): what chaining stages in one worker saves,
what passing a big intermediate through the host costs, how fast streamed arguments go
next to a Pipe loop, and how much host memory a slow reader costs with and without flow
control.

    .venv/bin/python benchmarks/bench_streams.py            # full run (~1 min, 2 vCPUs)
    .venv/bin/python benchmarks/bench_streams.py --smoke    # every measurement, tiny counts

Rows (each against its baseline, measured in the same run):

* 3-stage forward: ``Pipeline([Add, Add, Add])`` in one worker, one call, against three
  calls to three one-stage workers with the intermediates through the host; a small
  array (8 KB, in the frame) and a 1 MB one (shared memory);
* 100 MB intermediate: stage A makes a 100 MB array from a small input, stage B reduces
  it. A and B in two workers with A's segment handed over to B (protocol/handoff.py: A's
  copy into its segment only), and A and B in one worker (a Pipeline: no copy between
  processes), each against A and B in two workers with the host copying the array into
  a segment of its own for B (``handoff.ENABLED = False``: the behaviour before);
* streamed argument chunks/s: ``w.call("consume", chunks())`` against a
  ``multiprocessing`` Pipe child reading the same chunks with ``recv_bytes`` (no flow
  control, no codec); 1 KiB and 1 MiB chunks;
* peak host RSS growth while a slow reader (a 2 ms pause per chunk) reads a fast
  generator's 1 MiB chunks: ``stream_window=8`` against a window so large it never
  binds (the behaviour before flow control).

Writes ``streams.json`` and ``streams.md`` to ``benchmarks/results/`` (``--smoke``:
``benchmarks/results/smoke/``; or ``--out DIR``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402
import numpy as np  # noqa: E402
import stream_targets  # noqa: E402

import corral  # noqa: E402
from corral.protocol import handoff  # noqa: E402

T = os.path.join(HERE, "stream_targets.py")
MIB = 1 << 20

FULL = dict(fwd_rounds=7, fwd_calls=300, big_reps=5, big_n=12_500_000, chunk_rounds=5,
            small_chunks=20_000, big_chunks=300, rss_chunks=300, rss_pause=0.002)
SMOKE = dict(fwd_rounds=1, fwd_calls=20, big_reps=2, big_n=1_250_000, chunk_rounds=1,
             small_chunks=500, big_chunks=20, rss_chunks=40, rss_pause=0.001)

TARGET_FWD_RATIO = 1.0     # one call for 3 stages beats 3 calls (ratio of times < 1)
TARGET_BIG_RATIO = 1.0     # no copy through the host beats two copies
TARGET_CHUNKS_RATIO = 0.5  # streamed chunks/s >= half a bare Pipe loop's (small chunks)
TARGET_RSS_MIB = 64.0      # peak host growth with flow control


def log(msg: str) -> None:
    print(f"[bench_streams {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _per_call_us(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1e3


#: glibc keeps freed heap instead of trimming it (and mapping big blocks afresh): a stage
#: that allocates 1 MB results then stops page-faulting them in on every call.
KEEP_HEAP = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456:"
                               "glibc.malloc.mmap_threshold=268435456"}


def forward(cfg: dict, env: dict | None = None,
            sizes: tuple = ("small", "1mb")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stage = (f"{T}:Add", {"k": 1.0})
    arrays = {"small": np.ones(1000), "1mb": np.ones(MIB // 8)}
    with corral.Worker(corral.Pipeline([stage, stage, stage]), env=env) as pipe, \
            corral.Worker(f"{T}:Add", env=env) as w1, \
            corral.Worker(f"{T}:Add", env=env) as w2, \
            corral.Worker(f"{T}:Add", env=env) as w3:
        for label, x in ((k, arrays[k]) for k in sizes):
            def one():
                return pipe.call("forward", x)

            def three():
                return w3.call("forward", w2.call("forward", w1.call("forward", x)))

            assert np.array_equal(one(), three())
            ones, threes = [], []
            for r in range(cfg["fwd_rounds"]):
                pair = [(ones, one), (threes, three)]
                for acc, fn in (pair if r % 2 == 0 else pair[::-1]):
                    _per_call_us(fn, max(1, cfg["fwd_calls"] // 10))  # warm
                    acc.append(_per_call_us(fn, cfg["fwd_calls"]))
            out[label] = {"pipeline_us": c.median(ones), "three_calls_us": c.median(threes),
                          "ratio": c.median(a / b for a, b in zip(ones, threes))}
    return out


def big_intermediate(cfg: dict) -> dict[str, Any]:
    n = cfg["big_n"]
    x = np.array([2.0])
    expand = (f"{T}:Expand", {"n": n})
    with corral.Worker(corral.Pipeline([expand, f"{T}:Reduce"])) as pipe, \
            corral.Worker(f"{T}:Expand", config={"n": n}) as a, \
            corral.Worker(f"{T}:Reduce") as b:
        def two_workers() -> float:
            t0 = time.perf_counter_ns()
            mid = a.call("forward", x)
            b.call("forward", mid)
            del mid
            return (time.perf_counter_ns() - t0) / 1e6

        one_ms, handed_ms, copied_ms = [], [], []
        assert pipe.call("forward", x) == 2.0 * n
        try:
            for r in range(cfg["big_reps"] + 1):  # (the first round warms the pools up)
                t0 = time.perf_counter_ns()
                pipe.call("forward", x)
                one = (time.perf_counter_ns() - t0) / 1e6
                handoff.ENABLED = True
                handed = two_workers()
                handoff.ENABLED = False  # the baseline: the host copies it for B
                copied = two_workers()
                if r:
                    one_ms.append(one)
                    handed_ms.append(handed)
                    copied_ms.append(copied)
        finally:
            handoff.ENABLED = True
    return {"bytes": n * 8, "one_worker_ms": c.median(one_ms),
            "handed_over_ms": c.median(handed_ms), "through_host_ms": c.median(copied_ms),
            "ratio": c.median(a_ / b_ for a_, b_ in zip(handed_ms, copied_ms)),
            "ratio_one_worker": c.median(a_ / b_ for a_, b_ in zip(one_ms, copied_ms)),
            "copies_one_worker": 0, "copies_handed_over": 1, "copies_through_host": 2}


def chunks(cfg: dict) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=stream_targets.pipe_consume, args=(child,), daemon=True)
    proc.start()
    child.close()
    out: dict[str, Any] = {}
    try:
        with corral.Worker(f"{T}:Streams") as w:
            for label, size, n in (("1kib", 1024, cfg["small_chunks"]),
                                   ("1mib", MIB, cfg["big_chunks"])):
                chunk = b"x" * size

                def corral_run():
                    assert w.call("consume", (chunk for _ in range(n))) == n * size

                def pipe_run():
                    parent.send_bytes(b"%d" % n)
                    for _ in range(n):
                        parent.send_bytes(chunk)
                    assert int(parent.recv_bytes()) == n * size

                corral_run()
                pipe_run()
                cs, ps = [], []
                for r in range(cfg["chunk_rounds"]):
                    pair = [(cs, corral_run), (ps, pipe_run)]
                    for acc, fn in (pair if r % 2 == 0 else pair[::-1]):
                        t0 = time.perf_counter()
                        fn()
                        acc.append(n / (time.perf_counter() - t0))
                out[label] = {"corral_chunks_per_s": c.median(cs),
                              "pipe_chunks_per_s": c.median(ps),
                              "ratio": c.median(a / b for a, b in zip(cs, ps))}
    finally:
        parent.send_bytes(b"stop")
        proc.join(10)
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slow_reader(cfg: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, window in (("window_8", 8), ("unbounded", 1 << 30)):
        with corral.Worker(f"{T}:Streams", stream_window=window) as w:
            w.call("noop")
            base = peak = _rss()
            for i, a in enumerate(w.stream("produce", cfg["rss_chunks"], MIB)):
                del a
                time.sleep(cfg["rss_pause"])  # the slow reader
                peak = max(peak, _rss())
            out[label] = {"peak_growth_mib": (peak - base) / MIB}
    out["chunks"] = cfg["rss_chunks"]
    out["chunk_mib"] = 1
    return out


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, name in (("small", "8 KB"), ("1mb", "1 MB")):
        f = res["forward"][label]
        rows.append(dict(metric=f"3-stage forward, {name} array (time)", unit="µs",
                         corral=f["pipeline_us"], baseline_name="3 calls, 3 workers",
                         baseline=f["three_calls_us"], ratio=f["ratio"],
                         target=f"< {TARGET_FWD_RATIO:g}x", met=f["ratio"] < TARGET_FWD_RATIO))
    f = res["forward_keep_heap"]["1mb"]
    rows.append(dict(metric="3-stage forward, 1 MB array, malloc keeps its heap (time)",
                     unit="µs", corral=f["pipeline_us"], baseline_name="3 calls, 3 workers",
                     baseline=f["three_calls_us"], ratio=f["ratio"],
                     target=f"< {TARGET_FWD_RATIO:g}x", met=f["ratio"] < TARGET_FWD_RATIO))
    b = res["big_intermediate"]
    mb = b["bytes"] // 10**6
    rows.append(dict(metric=f"{mb} MB intermediate, worker A -> worker B, handed over (1 copy)",
                     unit="ms", corral=b["handed_over_ms"],
                     baseline_name="copied by the host (2 copies)",
                     baseline=b["through_host_ms"], ratio=b["ratio"],
                     target=f"< {TARGET_BIG_RATIO:g}x", met=b["ratio"] < TARGET_BIG_RATIO))
    rows.append(dict(metric=f"{mb} MB intermediate, A and B in one worker (0 copies)",
                     unit="ms", corral=b["one_worker_ms"],
                     baseline_name="copied by the host (2 copies)",
                     baseline=b["through_host_ms"], ratio=b["ratio_one_worker"],
                     target="-", met=None))
    for label, name in (("1kib", "1 KiB"), ("1mib", "1 MiB")):
        ch = res["chunks"][label]
        target = f">= {TARGET_CHUNKS_RATIO:g}x" if label == "1kib" else "-"
        rows.append(dict(metric=f"streamed argument, {name} chunks", unit="chunks/s",
                         corral=ch["corral_chunks_per_s"], baseline_name="Pipe loop",
                         baseline=ch["pipe_chunks_per_s"], ratio=ch["ratio"], target=target,
                         met=(ch["ratio"] >= TARGET_CHUNKS_RATIO) if label == "1kib" else None))
    s = res["slow_reader"]
    g8, gu = s["window_8"]["peak_growth_mib"], s["unbounded"]["peak_growth_mib"]
    rows.append(dict(metric=f"peak host RSS growth, slow reader of {s['chunks']} x 1 MiB",
                     unit="MiB", corral=max(g8, 0.01), baseline_name="no flow control",
                     baseline=max(gu, 0.01), ratio=c.ratio(max(g8, 0.01), max(gu, 0.01)),
                     target=f"<= {TARGET_RSS_MIB:g} MiB", met=g8 <= TARGET_RSS_MIB))
    return rows


def render_md(res: dict[str, Any]) -> str:
    meta = res["meta"]
    rows = res["rows"]
    lines = ["# corral streams and pipelines benchmark", "",
             f"{meta['mode']} run, {meta['date']}, commit {meta['corral_commit']}, "
             f"{meta['cpus_available']} CPUs ({meta['cpu_model']}), Python {meta['python']}.",
             "", c.markdown_table(rows), "",
             "Ratios are corral / baseline (times: lower is better; chunks/s: higher is "
             "better), medians of per-round ratios; rerun: `.venv/bin/python "
             "benchmarks/bench_streams.py` (see benchmarks/README.md).",
             "The 1 MB forward rows: with glibc's defaults, the three stages' 1 MB results "
             "make the pipeline's worker trim its heap and page-fault it back every call "
             "(about 0.8 ms here), which the one-stage workers escape; with the heap kept "
             "(GLIBC_TUNABLES trim/mmap thresholds, every worker alike) the chain costs "
             "about one call.",
             "The 100 MB rows: handed over, B maps A's segment (A's own copy into it is the "
             "only one); copied, the host copies it into a segment of its own for B."]
    lines += c.verdict_lines(rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, cfg, out_dir = c.command_line(__doc__, "streams.json and streams.md", FULL, SMOKE,
                                        argv)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"
    results: dict[str, Any] = {"meta": meta, "config": cfg}
    log("3-stage forward")
    results["forward"] = forward(cfg)
    results["forward_keep_heap"] = forward(cfg, KEEP_HEAP, ("1mb",))
    log("big intermediate")
    results["big_intermediate"] = big_intermediate(cfg)
    log("streamed chunks")
    results["chunks"] = chunks(cfg)
    log("slow reader")
    results["slow_reader"] = slow_reader(cfg)
    results["leftover_children"] = c.leftover_children(log)
    meta["wall_s"] = time.perf_counter() - t_start
    results["rows"] = table_rows(results)
    results["targets"] = {"met": c.met(results["rows"])}
    c.write_results(out_dir, "streams", results, render_md(results))
    log(f"wrote {os.path.join(out_dir, 'streams.json')} and streams.md in "
        f"{meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
