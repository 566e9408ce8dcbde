#!/usr/bin/env python
"""Core benchmark: corral against bare baselines measured in the same run.

    .venv/bin/python benchmarks/bench_core.py            # full run (~45-60 s on 2 vCPUs)
    .venv/bin/python benchmarks/bench_core.py --smoke    # every measurement, tiny counts
    .venv/bin/python benchmarks/bench_core.py --pin      # host on CPU 0, children on CPU 1

Baselines: A, a bare ``multiprocessing.Pipe`` request/response loop in a child process
(same request and reply sizes as corral's no-op frames); B, ``ProcessPoolExecutor(1)``.
Every corral figure is reported as a ratio to a baseline measured in the same run,
interleaved with it (see benchmarks/README.md). Writes ``core.json`` and ``core.md`` to
``benchmarks/results/`` (``--smoke``: ``benchmarks/results/smoke/``; or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import contextlib
import gc
import itertools
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402
import targets  # noqa: E402

import corral  # noqa: E402

TARGETS_FILE = os.path.join(HERE, "targets.py")
NOOP_REF = f"{TARGETS_FILE}:Noop"
ASYNC_NOOP_REF = f"{TARGETS_FILE}:AsyncNoop"
ASYNC_SLOTS = 8  # the async target's calls in progress at once (the rest wait in prefetch)
EMPTY_REF = f"{TARGETS_FILE}:Empty"

#: Counts of a full run (~45-60 s on 2 vCPUs) and of a smoke run (a few seconds).
FULL = dict(warmup=2000, lat_rounds=11, lat_calls=4000, ppe_rounds=5, ppe_calls=1500,
            tput_rounds=11, tput_block_s=0.3, window=64, cold_reps=21, rss_reps=3)
SMOKE = dict(warmup=50, lat_rounds=2, lat_calls=100, ppe_rounds=2, ppe_calls=50,
             tput_rounds=2, tput_block_s=0.02, window=64, cold_reps=2, rss_reps=1)

# The project's targets; the other rows of the table are for information only.
TARGET_P50_RATIO = 1.2     # corral no-op p50 <= 1.2x the Pipe loop's (issue 19)
TARGET_PIPELINED = 0.9     # corral pipelined calls/s >= 0.9x the Pipe loop's
TARGET_SUBMIT = 0.7        # ... through submit() futures, and asyncio.gather of acall()
TARGET_COLD_MS = 120.0     # corral cold start to ready, absolute
TARGET_COLD_RATIO = 4.0    # ... and <= 4x `python -c pass` (issue 19)
TARGET_RSS_MIB = 30.0      # idle corral worker RSS, absolute

MIB = 1024 * 1024
CTX = mp.get_context("spawn")  # a fresh interpreter like corral's worker; no fork-with-threads


def log(msg: str) -> None:
    print(f"[bench_core {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def corral_frame_sizes() -> tuple[int, int]:
    """Bytes of the msgpack body of a corral no-op Call and of its Done reply (the frame
    header, 4 bytes, comes on top, as it does for ``Connection.send_bytes``)."""
    try:
        from corral.protocol import messages as m
        from corral.protocol.values import make_encoder

        enc = make_encoder()
        # A call id in the range a run reaches (3-byte msgpack int), a float run time.
        return (len(enc.encode(m.Call(5000, "noop", [], {}, None))),
                len(enc.encode(m.Done(5000, None, 1.5e-6))))
    except Exception:  # noqa: BLE001 - internals moved: use the sizes measured at writing
        return 15, 17


# -- the systems under test --------------------------------------------------------------


class PipeLoop:
    """Baseline A: a child that answers each ``send_bytes`` with one ``send_bytes``."""

    name = "Pipe loop"

    def __init__(self, request_size: int, reply_size: int):
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=targets.pipe_echo, args=(child, reply_size),
                                name="bench-pipe-echo", daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid
        self.request = b"q" * request_size
        self.reply_size = reply_size
        send, recv, req = self.conn.send_bytes, self.conn.recv_bytes, self.request

        def call() -> None:
            send(req)
            recv()

        self.call = call

    def pipelined(self, n: int, window: int) -> None:
        """``n`` calls with ``window`` requests written ahead of the replies."""
        send, recv, req = self.conn.send_bytes, self.conn.recv_bytes, self.request
        ahead = min(window, n)
        for _ in range(ahead):
            send(req)
        for _ in range(n - ahead):
            recv()
            send(req)
        for _ in range(ahead):
            recv()

    def close(self) -> None:
        self.conn.close()  # the child sees EOF and returns
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class AsyncioFloor:
    """Information: what ``asyncio.gather`` costs with nothing else in the way, the floor
    for corral's gather row. A bare reader (``add_reader``) on the Pipe loop's own
    connection settles one future per request, 64 at a time like the gather of ``acall``;
    ``tasks``: each future is awaited in a coroutine of its own, as gather wraps a
    coroutine in a Task (what ``async def acall`` cost corral before it handed out its
    future). Same child, same frames (``multiprocessing``'s 4-byte header)."""

    def __init__(self, pipe: PipeLoop, tasks: bool):
        self.pipe, self.tasks, self.pid = pipe, tasks, pipe.pid
        self.name = "asyncio floor (" + ("a Task per call" if tasks else "futures") + ")"

    def pipelined_gather(self, n: int, window: int) -> None:
        import asyncio

        # A descriptor of its own, non-blocking while the loop reads (the flag is the
        # socket's: set back before the Pipe loop reads with it again).
        sock = socket.socket(fileno=os.dup(self.pipe.conn.fileno()))
        sock.setblocking(False)
        try:
            asyncio.run(self._gathers(sock, n, window))
        finally:
            sock.setblocking(True)
            sock.close()

    async def _gathers(self, sock: socket.socket, n: int, window: int) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        request = struct.pack("!i", len(self.pipe.request)) + self.pipe.request
        frame = 4 + self.pipe.reply_size
        pending: collections.deque = collections.deque()
        buf = bytearray()

        def readable() -> None:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            if not data:
                raise EOFError("the Pipe loop's child is gone")
            buf.extend(data)
            k = len(buf) // frame
            del buf[: k * frame]
            for _ in range(k):
                pending.popleft().set_result(None)

        def submit() -> Any:
            fut = loop.create_future()
            pending.append(fut)
            sock.send(request)
            return fut

        async def call() -> None:
            await submit()

        make = call if self.tasks else submit
        loop.add_reader(sock.fileno(), readable)
        try:
            left = n
            while left:
                k = min(window, left)
                left -= k
                await asyncio.gather(*[make() for _ in range(k)])
        finally:
            loop.remove_reader(sock.fileno())


class PoolExecutor:
    """Baseline B: ``ProcessPoolExecutor(1)``, a module-level no-op function."""

    name = "ProcessPoolExecutor(1)"

    def __init__(self):
        self.ex = cf.ProcessPoolExecutor(1, mp_context=CTX)
        self.ex.submit(targets.noop).result()  # starts the process
        self.pid = next(iter(self.ex._processes))  # noqa: SLF001 - for pinning and RSS
        submit, fn = self.ex.submit, targets.noop

        def call() -> None:
            submit(fn).result()

        self.call = call

    def pipelined(self, n: int, window: int) -> None:
        _sliding_window(lambda: self.ex.submit(targets.noop), n, window)

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


class Corral:
    """corral: ``Worker(targets.py:Noop)``, ``call("noop")``, ``submit("noop")``."""

    name = "corral"

    def __init__(self, window: int = 64, ref: str = NOOP_REF, slots: int = 1):
        # The worker's own window (slots + prefetch) matches the benchmark's, so that both
        # sides keep the same number of requests in flight.
        self.worker = corral.Worker(ref, slots=slots, prefetch=window - slots).start()
        self.pid = self.worker.pid
        call = self.worker.call

        def noop() -> None:
            call("noop")

        self.call = noop

    def pipelined(self, n: int, window: int) -> None:
        # Worker.starmap pipelines on the calling thread: ``window`` calls in flight.
        for _ in self.worker.starmap("noop", itertools.repeat((), n)):
            pass

    def pipelined_submit(self, n: int, window: int) -> None:
        submit = self.worker.submit
        _sliding_window(lambda: submit("noop"), n, window)

    def pipelined_gather(self, n: int, window: int) -> None:
        """``asyncio.gather`` of ``window`` ``acall()`` at a time, on a fresh event loop."""
        import asyncio

        acall = self.worker.acall

        async def run() -> None:
            left = n
            while left:
                k = min(window, left)
                left -= k
                await asyncio.gather(*[acall("noop") for _ in range(k)])

        asyncio.run(run())

    def close(self) -> None:
        self.worker.stop()


def _sliding_window(submit: Callable[[], cf.Future], n: int, window: int) -> None:
    """Keep ``window`` futures in flight until ``n`` have completed (they finish in order)."""
    q: collections.deque = collections.deque()
    ahead = min(window, n)
    for _ in range(ahead):
        q.append(submit())
    popleft, append = q.popleft, q.append
    for _ in range(n - ahead):
        popleft().result()
        append(submit())
    while q:
        popleft().result()


# -- measurements ---------------------------------------------------------------------------


def interleaved_latency(a: Callable[[], None], b: Callable[[], None],
                        n: int) -> tuple[list[int], list[int]]:
    """``n`` calls of each, alternating a-b and b-a so that neither always goes first."""
    clock = time.perf_counter_ns
    ta, tb = [0] * n, [0] * n
    for i in range(n):
        if i & 1:
            t0 = clock()
            a()
            t1 = clock()
            b()
            t2 = clock()
            ta[i], tb[i] = t1 - t0, t2 - t1
        else:
            t0 = clock()
            b()
            t1 = clock()
            a()
            t2 = clock()
            tb[i], ta[i] = t1 - t0, t2 - t1
    return ta, tb


def latency_rounds(base: Any, cor: Any, rounds: int, calls: int, key: str) -> dict[str, Any]:
    """Per round: p50/p99 of each side and their ratios; overall: medians across rounds."""
    per_round = []
    for r in range(rounds):
        gc.collect()
        tb, tc = interleaved_latency(base.call, cor.call, calls)
        row = {
            f"{key}_p50_us": c.percentile(tb, 50) / 1e3,
            f"{key}_p99_us": c.percentile(tb, 99) / 1e3,
            "corral_p50_us": c.percentile(tc, 50) / 1e3,
            "corral_p99_us": c.percentile(tc, 99) / 1e3,
        }
        row["ratio_p50"] = row["corral_p50_us"] / row[f"{key}_p50_us"]
        row["ratio_p99"] = row["corral_p99_us"] / row[f"{key}_p99_us"]
        per_round.append(row)
        log(f"  latency round {r + 1}/{rounds} vs {base.name}: {key} p50 "
            f"{row[f'{key}_p50_us']:.1f} us, corral p50 {row['corral_p50_us']:.1f} us "
            f"({row['ratio_p50']:.2f}x)")
    out: dict[str, Any] = {k: c.median(r[k] for r in per_round) for k in per_round[0]}
    out["ratio_p50_spread"] = c.spread([r["ratio_p50"] for r in per_round])
    out["calls_per_round"] = calls
    out["rounds"] = per_round
    return out


def blocked_latency(base: Any, cor: Any, rounds: int, calls: int) -> dict[str, Any]:
    """Like ``latency_rounds`` but each side makes a run of ``calls`` calls in a row (order
    alternating by round): a child that is called back to back stays warm on its CPU,
    which the call-by-call interleaving never lets happen (information only)."""
    clock = time.perf_counter_ns

    def run(call: Callable[[], None]) -> list[int]:
        for _ in range(min(100, calls)):  # untimed: let the scheduler settle on this pair
            call()
        ts = [0] * calls
        for i in range(calls):
            t0 = clock()
            call()
            ts[i] = clock() - t0
        return ts

    per_round = []
    for r in range(rounds):
        gc.collect()
        if r & 1:
            tc, tb = run(cor.call), run(base.call)
        else:
            tb, tc = run(base.call), run(cor.call)
        row = {"pipe_p50_us": c.percentile(tb, 50) / 1e3,
               "corral_p50_us": c.percentile(tc, 50) / 1e3}
        row["ratio_p50"] = row["corral_p50_us"] / row["pipe_p50_us"]
        per_round.append(row)
    out: dict[str, Any] = {k: c.median(r[k] for r in per_round) for k in per_round[0]}
    out["calls_per_run"] = calls
    out["rounds"] = per_round
    log(f"  runs of {calls}: pipe p50 {out['pipe_p50_us']:.1f} us, corral p50 "
        f"{out['corral_p50_us']:.1f} us ({out['ratio_p50']:.2f}x)")
    return out


def throughput_rounds(systems: dict[str, Any], rounds: int, block_s: float,
                      rates: dict[str, float], run: Callable[[Any, int], None],
                      what: str) -> dict[str, Any]:
    """Blocks of calls, one per system per round, in an order that rotates every round;
    each block is sized from the system's warm-up rate to last about ``block_s``. Also
    the CPU time each call cost the host process (all its threads) and the child."""
    names = list(systems)
    host_cpu = time.process_time_ns
    per_round = []
    for r in range(rounds):
        gc.collect()
        row: dict[str, float] = {}
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            s = systems[name]
            n = max(200, int(rates[name] * block_s))
            h0, c0 = host_cpu(), s.cpu()
            t0 = time.perf_counter()
            run(s, n)
            dt = time.perf_counter() - t0
            h1, c1 = host_cpu(), s.cpu()
            row[f"{name}_calls_per_s"] = n / dt
            row[f"{name}_host_cpu_us_per_call"] = (h1 - h0) / n / 1e3
            row[f"{name}_child_cpu_us_per_call"] = (c1 - c0) / n / 1e3
        row["ratio_vs_pipe"] = row["corral_calls_per_s"] / row["pipe_calls_per_s"]
        row["ratio_vs_ppe"] = row["corral_calls_per_s"] / row["ppe_calls_per_s"]
        per_round.append(row)
        log(f"  {what} round {r + 1}/{rounds}: pipe {row['pipe_calls_per_s']:,.0f}/s, "
            f"corral {row['corral_calls_per_s']:,.0f}/s, ppe {row['ppe_calls_per_s']:,.0f}/s")
    out: dict[str, Any] = {k: c.median(r[k] for r in per_round) for k in per_round[0]}
    out["ratio_vs_pipe_spread"] = c.spread([r["ratio_vs_pipe"] for r in per_round])
    out["block_s"] = block_s
    out["rounds"] = per_round
    return out


def steady_state(cfg: dict[str, Any], request_size: int, reply_size: int,
                 pin: bool) -> dict[str, Any]:
    """Latency, sequential and pipelined throughput, and the idle RSS of the running
    baseline children, with the three systems up side by side."""
    res: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        log("starting the Pipe loop, ProcessPoolExecutor(1) and a corral worker")
        pipe = PipeLoop(request_size, reply_size)
        stack.callback(pipe.close)
        ppe = PoolExecutor()
        stack.callback(ppe.close)
        cor = Corral(cfg["window"])
        stack.callback(cor.close)
        systems = {"pipe": pipe, "ppe": ppe, "corral": cor}
        for s in systems.values():
            s.cpu = c.cpu_clock(s.pid)
        if pin:
            for s in systems.values():
                c.pin_process(s.pid, {1})

        log("warming up")
        rates = {}
        for name, s in systems.items():
            n = cfg["warmup"] if name != "ppe" else max(20, cfg["warmup"] // 4)
            t0 = time.perf_counter()
            for _ in range(n):
                s.call()
            rates[name] = n / (time.perf_counter() - t0)
        interleaved_latency(pipe.call, cor.call, cfg["warmup"])
        prates = {}
        for name, s in systems.items():
            n = max(4 * cfg["window"], int(rates[name] * 0.05))
            t0 = time.perf_counter()
            s.pipelined(n, cfg["window"])
            prates[name] = n / (time.perf_counter() - t0)

        log("no-op latency, corral interleaved with the Pipe loop")
        res["latency"] = latency_rounds(pipe, cor, cfg["lat_rounds"], cfg["lat_calls"], "pipe")
        log("no-op latency, runs of calls (not interleaved, information only)")
        res["latency_runs"] = blocked_latency(pipe, cor, cfg["lat_rounds"],
                                              max(100, cfg["lat_calls"] // 4))
        log("no-op latency, corral interleaved with ProcessPoolExecutor(1)")
        res["latency_vs_ppe"] = latency_rounds(ppe, cor, cfg["ppe_rounds"], cfg["ppe_calls"],
                                               "ppe")

        log("sequential calls/s")

        def seq(s: Any, n: int) -> None:
            call = s.call
            for _ in range(n):
                call()

        res["sequential"] = throughput_rounds(systems, cfg["tput_rounds"], cfg["tput_block_s"],
                                              rates, seq, "sequential")
        log(f"pipelined calls/s ({cfg['window']} in flight)")
        window = cfg["window"]
        res["pipelined"] = throughput_rounds(
            systems, cfg["tput_rounds"], cfg["tput_block_s"], prates,
            lambda s, n: s.pipelined(n, window), "pipelined")
        res["pipelined"]["window"] = window
        log(f"pipelined calls/s through submit() futures ({window} in flight)")
        res["pipelined_submit"] = throughput_rounds(
            systems, cfg["tput_rounds"], cfg["tput_block_s"], prates,
            lambda s, n: (s.pipelined_submit if s.name == "corral" else s.pipelined)(n, window),
            "pipelined (submit)")
        log(f"pipelined calls/s through asyncio.gather of acall() ({window} at a time), "
            "with asyncio's own floor")
        floors = {"floor_futures": AsyncioFloor(pipe, False),
                  "floor_tasks": AsyncioFloor(pipe, True)}
        for f in floors.values():
            f.cpu = pipe.cpu
        res["pipelined_gather"] = throughput_rounds(
            {**systems, **floors}, cfg["tput_rounds"], cfg["tput_block_s"],
            {**prates, **{k: prates["pipe"] for k in floors}},
            lambda s, n: (s.pipelined_gather if hasattr(s, "pipelined_gather")
                          else s.pipelined)(n, window),
            "pipelined (gather)")
        for k in floors:
            res["pipelined_gather"][f"{k}_ratio_vs_pipe"] = c.median(
                r[f"{k}_calls_per_s"] / r["pipe_calls_per_s"]
                for r in res["pipelined_gather"]["rounds"])

        log(f"pipelined calls/s, an all-async target ({ASYNC_SLOTS} slots, {window} in flight)")
        acor = Corral(window, ASYNC_NOOP_REF, ASYNC_SLOTS)
        stack.callback(acor.close)
        acor.cpu = c.cpu_clock(acor.pid)
        if pin:
            c.pin_process(acor.pid, {1})
        n = max(4 * window, int(prates["corral"] * 0.05))
        t0 = time.perf_counter()
        acor.pipelined(n, window)
        async_rates = {**prates, "corral": n / (time.perf_counter() - t0)}
        res["pipelined_async"] = throughput_rounds(
            {"pipe": pipe, "ppe": ppe, "corral": acor}, cfg["tput_rounds"],
            cfg["tput_block_s"], async_rates, lambda s, n: s.pipelined(n, window),
            "pipelined (async target)")
        res["pipelined_async"]["slots"] = ASYNC_SLOTS

        time.sleep(0.2)
        res["rss_running"] = {
            "pipe_child_mib": c.proc_memory(pipe.pid)["VmRSS"] / MIB,
            "ppe_child_mib": c.proc_memory(ppe.pid)["VmRSS"] / MIB,
            "corral_after_calls_mib": c.proc_memory(cor.pid)["VmRSS"] / MIB,
            "corral_calls_served": cor.worker.stats().calls_served,
        }
        log("stopping the three systems")
    return res


def cache_bytecode() -> str:
    """Compile corral's modules to ``__pycache__`` first, as installing a wheel does: an
    editable checkout under PYTHONDONTWRITEBYTECODE (set on these machines) would otherwise
    compile every module again at every start, ~25 ms that no installed corral pays."""
    import compileall

    root = os.path.dirname(os.path.abspath(corral.__file__))
    ok = compileall.compile_dir(root, quiet=1)
    return "cached (compileall of corral's package first)" if ok else "compileall failed"


def cold_start(cfg: dict[str, Any], request_size: int, reply_size: int) -> dict[str, Any]:
    """Each rep runs every variant once, in an order that rotates every rep."""
    py = sys.executable
    devnull = subprocess.DEVNULL

    def python_run(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([py, "-c", code], stdin=devnull, stdout=devnull, stderr=devnull,
                       check=True)
        return (time.perf_counter() - t0) * 1e3

    extra: dict[str, list[float]] = collections.defaultdict(list)

    def corral_ready() -> float:
        t0 = time.perf_counter()
        w = corral.Worker(EMPTY_REF)
        try:
            w.start()
            dt = (time.perf_counter() - t0) * 1e3
            internal = getattr(w, "start_time", None)  # corral's own figure, if it keeps one
            if internal is not None:
                extra["corral_internal_start_time_ms"].append(internal * 1e3)
        finally:
            t1 = time.perf_counter()
            w.stop()
            extra["corral_stop_ms"].append((time.perf_counter() - t1) * 1e3)
        return dt

    def corral_first_reply() -> float:
        t0 = time.perf_counter()
        w = corral.Worker(NOOP_REF)
        try:
            w.start()
            w.call("noop")
            return (time.perf_counter() - t0) * 1e3
        finally:
            w.stop()

    def mp_first_reply() -> float:
        req = b"q" * request_size
        t0 = time.perf_counter()
        parent, child = CTX.Pipe()
        p = CTX.Process(target=targets.pipe_echo, args=(child, reply_size), daemon=True)
        p.start()
        try:
            child.close()
            parent.send_bytes(req)
            parent.recv_bytes()
            return (time.perf_counter() - t0) * 1e3
        finally:
            parent.close()
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()

    variants: dict[str, Callable[[], float]] = {
        "corral_ready_ms": corral_ready,
        "python_pass_ms": lambda: python_run("pass"),
        "corral_first_reply_ms": corral_first_reply,
        "mp_spawn_first_reply_ms": mp_first_reply,
        "python_import_corral_worker_ms": lambda: python_run("import corral.worker.main"),
    }
    names = list(variants)
    variants[names[0]]()  # one untimed start of each: page cache, .pyc files
    variants[names[3]]()
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(cfg["cold_reps"]):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            samples[name].append(variants[name]())
    out: dict[str, Any] = {k: c.median(v) for k, v in samples.items()}
    out.update({k: c.median(v) for k, v in extra.items()})
    out["corral_ready_ms_min"] = min(samples["corral_ready_ms"])
    out["ratio_vs_python_pass"] = c.median(
        a / b for a, b in zip(samples["corral_ready_ms"], samples["python_pass_ms"]))
    out["ratio_first_reply_vs_mp_spawn"] = c.median(
        a / b for a, b in zip(samples["corral_first_reply_ms"],
                              samples["mp_spawn_first_reply_ms"]))
    out["reps"] = cfg["cold_reps"]
    out["samples"] = samples
    log(f"  cold start: corral {out['corral_ready_ms']:.1f} ms to ready, python -c pass "
        f"{out['python_pass_ms']:.1f} ms, mp spawn + first reply "
        f"{out['mp_spawn_first_reply_ms']:.1f} ms")
    return out


def idle_rss(cfg: dict[str, Any]) -> dict[str, Any]:
    """A fresh idle corral worker (no-op target, after 100 calls) against a bare idle
    ``python`` blocked on stdin; VmRSS from /proc/<pid>/status."""
    code = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
    samples: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(cfg["rss_reps"]):
        with corral.Worker(NOOP_REF) as w:
            for _ in range(100):
                w.call("noop")
            time.sleep(0.3)
            mem = c.proc_memory(w.pid)
            stats_rss = w.stats().rss
        samples["corral_idle_mib"].append(mem["VmRSS"] / MIB)
        samples["corral_idle_anon_mib"].append(mem.get("RssAnon", 0) / MIB)
        samples["corral_idle_file_mib"].append(mem.get("RssFile", 0) / MIB)
        samples["corral_stats_rss_mib"].append((stats_rss or 0) / MIB)

        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        try:
            p.stdout.readline()
            time.sleep(0.3)
            mem = c.proc_memory(p.pid)
        finally:
            p.stdin.close()
            p.stdout.close()
            p.wait(5.0)
        samples["bare_python_mib"].append(mem["VmRSS"] / MIB)
        samples["bare_python_anon_mib"].append(mem.get("RssAnon", 0) / MIB)
        samples["bare_python_file_mib"].append(mem.get("RssFile", 0) / MIB)
    out: dict[str, Any] = {k: c.median(v) for k, v in samples.items()}
    out["ratio_vs_bare_python"] = out["corral_idle_mib"] / out["bare_python_mib"]
    log(f"  idle RSS: corral worker {out['corral_idle_mib']:.1f} MiB, bare python "
        f"{out['bare_python_mib']:.1f} MiB")
    return out


# -- report ---------------------------------------------------------------------------------


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    lat, lat_ppe, runs = res["latency"], res["latency_vs_ppe"], res["latency_runs"]
    seq, pip, cold, rss = res["sequential"], res["pipelined"], res["cold_start"], res["rss"]
    run_rss, pa, pg = res["rss_running"], res["pipelined_async"], res["pipelined_gather"]
    w = pip["window"]

    def row(metric, unit, cor, base_name, base, ratio, target="-", met=None):
        return {"metric": metric, "unit": unit, "corral": cor, "baseline_name": base_name,
                "baseline": base, "ratio": ratio, "target": target, "met": met}

    return [
        row("no-op call latency p50", "us", lat["corral_p50_us"], "Pipe loop",
            lat["pipe_p50_us"], lat["ratio_p50"], f"<= {TARGET_P50_RATIO}x Pipe",
            lat["ratio_p50"] <= TARGET_P50_RATIO),
        row("no-op call latency p99", "us", lat["corral_p99_us"], "Pipe loop",
            lat["pipe_p99_us"], lat["ratio_p99"]),
        row(f"no-op call latency p50, runs of {runs['calls_per_run']} (not interleaved)", "us",
            runs["corral_p50_us"], "Pipe loop", runs["pipe_p50_us"], runs["ratio_p50"]),
        row("no-op call latency p50", "us", lat_ppe["corral_p50_us"], "ProcessPoolExecutor(1)",
            lat_ppe["ppe_p50_us"], lat_ppe["ratio_p50"]),
        row("sequential calls/s", "/s", seq["corral_calls_per_s"], "Pipe loop",
            seq["pipe_calls_per_s"], seq["ratio_vs_pipe"]),
        row("sequential calls/s", "/s", seq["corral_calls_per_s"], "ProcessPoolExecutor(1)",
            seq["ppe_calls_per_s"], seq["ratio_vs_ppe"]),
        row(f"pipelined calls/s ({w} in flight)", "/s", pip["corral_calls_per_s"], "Pipe loop",
            pip["pipe_calls_per_s"], pip["ratio_vs_pipe"], f">= {TARGET_PIPELINED}x Pipe",
            pip["ratio_vs_pipe"] >= TARGET_PIPELINED),
        row(f"pipelined calls/s ({w} in flight)", "/s", pip["corral_calls_per_s"],
            "ProcessPoolExecutor(1)", pip["ppe_calls_per_s"], pip["ratio_vs_ppe"]),
        *[row(what, "/s", d["corral_calls_per_s"], "Pipe loop", d["pipe_calls_per_s"],
              d["ratio_vs_pipe"], f">= {TARGET_SUBMIT}x Pipe", d["ratio_vs_pipe"] >= TARGET_SUBMIT)
          for what, d in ((f"pipelined calls/s through submit() futures ({w} in flight)",
                           res["pipelined_submit"]),
                          (f"pipelined calls/s through asyncio.gather of acall() ({w} at a time)",
                           res["pipelined_gather"]))],
        *[row(f"(the floor) asyncio.gather on a bare reader over the Pipe, {how} ({w} at a "
              "time)", "/s", pg[f"{key}_calls_per_s"], "Pipe loop", pg["pipe_calls_per_s"],
              pg[f"{key}_ratio_vs_pipe"])
          for key, how in (("floor_futures", "futures"),
                           ("floor_tasks", "a coroutine (a Task) per call"))],
        *[row(f"{who} CPU per {kind} call", "us", d[f"corral_{side}_cpu_us_per_call"],
              "Pipe loop", d[f"pipe_{side}_cpu_us_per_call"],
              c.ratio(d[f"corral_{side}_cpu_us_per_call"], d[f"pipe_{side}_cpu_us_per_call"]))
          for kind, d in (("sequential", seq), ("pipelined", pip))
          for who, side in (("host", "host"), ("worker (child)", "child"))],
        row(f"pipelined calls/s, all-async target ({ASYNC_SLOTS} slots, {w} in flight)", "/s",
            pa["corral_calls_per_s"], "Pipe loop", pa["pipe_calls_per_s"], pa["ratio_vs_pipe"]),
        row("worker (child) CPU per pipelined call, all-async target", "us",
            pa["corral_child_cpu_us_per_call"], "Pipe loop", pa["pipe_child_cpu_us_per_call"],
            c.ratio(pa["corral_child_cpu_us_per_call"], pa["pipe_child_cpu_us_per_call"])),
        row("cold start to ready (empty target)", "ms", cold["corral_ready_ms"],
            "`python -c pass`", cold["python_pass_ms"], cold["ratio_vs_python_pass"],
            f"<= {TARGET_COLD_MS:g} ms and <= {TARGET_COLD_RATIO:g}x",
            cold["corral_ready_ms"] <= TARGET_COLD_MS
            and cold["ratio_vs_python_pass"] <= TARGET_COLD_RATIO),
        row("start + first no-op reply", "ms", cold["corral_first_reply_ms"],
            "mp spawn Process + first Pipe reply", cold["mp_spawn_first_reply_ms"],
            cold["ratio_first_reply_vs_mp_spawn"]),
        row("(part of it) `python -c 'import corral.worker.main'`", "ms",
            cold["python_import_corral_worker_ms"], "`python -c pass`", cold["python_pass_ms"],
            c.ratio(cold["python_import_corral_worker_ms"], cold["python_pass_ms"])),
        row("idle worker RSS", "MiB", rss["corral_idle_mib"], "bare idle `python`",
            rss["bare_python_mib"], rss["ratio_vs_bare_python"], f"<= {TARGET_RSS_MIB:g} MiB",
            rss["corral_idle_mib"] <= TARGET_RSS_MIB),
        row("RSS after the steady-state calls", "MiB", run_rss["corral_after_calls_mib"],
            "the Pipe loop's spawn child", run_rss["pipe_child_mib"],
            c.ratio(run_rss["corral_after_calls_mib"], run_rss["pipe_child_mib"])),
    ]


def render_md(data: dict[str, Any]) -> str:
    meta = data["meta"]
    pin = "pinned (host CPU 0, children CPU 1)" if meta["pinned"] else "not pinned"
    lines = [
        f"# corral core benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}; corral {meta['corral']} at {meta['corral_commit'] or '?'}; "
        f"Python {meta['python']}; {meta['cpu_count']} CPUs "
        f"({meta['cpu_model'] or 'unknown model'}); {pin}; bytecode "
        f"{meta.get('bytecode', '?')}; run took {meta['wall_s']:.0f} s. "
        f"Payload: {data['payload']['request_bytes']} B request, "
        f"{data['payload']['reply_bytes']} B reply (corral's no-op frames; the Pipe loop "
        "sends the same sizes).",
        "",
        c.markdown_table(data["rows"]),
        "",
        "Ratio = corral / baseline, the median over rounds of the per-round ratio (each round "
        "interleaves corral with the baseline), so it can differ slightly from the quotient "
        "of the two median columns.",
    ]
    lines += c.verdict_lines(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def pin_option(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--pin", action="store_true",
                        help="pin the host to CPU 0 and the children to CPU 1")

    args, cfg, out_dir = c.command_line(__doc__, "core.json and core.md", FULL, SMOKE, argv,
                                        pin_option)
    t_start = time.perf_counter()

    pinned = False
    if args.pin:
        cpus = os.sched_getaffinity(0)
        if {0, 1} <= cpus:
            c.pin_process(os.getpid(), {0})
            pinned = True
        else:
            log(f"--pin needs CPUs 0 and 1, have {sorted(cpus)}: not pinning")

    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"
    meta["pinned"] = pinned
    if pinned:
        meta["pinning"] = ("host and its threads on CPU 0; the running Pipe, pool and corral "
                           "children on CPU 1; cold-start and RSS children inherit CPU 0")
    request_size, reply_size = corral_frame_sizes()
    results: dict[str, Any] = {
        "meta": meta,
        "config": cfg,
        "payload": {"request_bytes": request_size, "reply_bytes": reply_size,
                    "note": "msgpack bodies of corral's no-op Call and Done; both corral and "
                            "the Pipe loop add a 4-byte length header"},
    }
    results.update(steady_state(cfg, request_size, reply_size, pinned))
    log("cold start")
    meta["bytecode"] = cache_bytecode()
    results["cold_start"] = cold_start(cfg, request_size, reply_size)
    log("idle RSS")
    results["rss"] = idle_rss(cfg)

    results["leftover_children"] = c.leftover_children(log)

    meta["wall_s"] = time.perf_counter() - t_start
    results["rows"] = table_rows(results)
    results["targets"] = {
        "noop_p50_ratio_max": TARGET_P50_RATIO,
        "pipelined_ratio_min": TARGET_PIPELINED,
        "submit_gather_ratio_min": TARGET_SUBMIT,
        "cold_start_ratio_max": TARGET_COLD_RATIO,
        "cold_start_ms_max": TARGET_COLD_MS,
        "idle_rss_mib_max": TARGET_RSS_MIB,
        "met": c.met(results["rows"]),
    }
    c.write_results(out_dir, "core", results, render_md(results))
    log(f"wrote {os.path.join(out_dir, 'core.json')} and core.md in {meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
