#!/usr/bin/env python
"""Big-values benchmark: arrays and bytes through corral's shared memory, against memcpy.

    .venv/bin/python benchmarks/bench_values.py            # full run (~2 min on 2 vCPUs)
    .venv/bin/python benchmarks/bench_values.py --smoke    # every measurement, tiny sizes
    .venv/bin/python benchmarks/bench_values.py --out DIR  # write the results elsewhere

Every corral time is reported as a ratio to a memcpy of the same number of bytes
(``np.copyto`` into a pre-faulted destination) measured in the same run, interleaved with
it. A second baseline is the old way: ``multiprocessing.Pipe`` ``send_bytes``/``recv_bytes``
with pickle protocol 5 (out-of-band buffers) for arrays. Cold (first call: new segments),
scaling (one fresh host per size) and peak-RSS figures come from child host processes, so
that each starts with an empty shared-memory pool. Writes ``values.json``, ``values.md`` and
``values.png`` to ``benchmarks/results/`` (``--smoke``: ``benchmarks/results/smoke/``; or
``--out DIR``). See benchmarks/README.md, section "Values".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import mmap
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402
import numpy as np  # noqa: E402
import targets  # noqa: E402

import corral  # noqa: E402

TARGETS_FILE = os.path.join(HERE, "targets.py")
VALUES_REF = f"{TARGETS_FILE}:Values"
CTX = mp.get_context("spawn")  # a fresh interpreter, like corral's worker

KIB, MIB, GIB = 1024, 1024**2, 1024**3
MB, GB = 1000**2, 1000**3

#: Sizes and counts of a full run (~2 min, < 10 GB) and of a smoke run (a few seconds).
FULL = dict(
    big=100 * MB,           # items 1 and 2: a float32 array of this many bytes
    bytes_size=50 * MB,     # item 3
    empty_sizes=[1 * MB, 100 * MB, 1 * GB],  # item 4
    rounds=11,              # interleaved rounds of items 1-3
    empty_reps=101,         # calls per size for item 4
    scale_sizes=[KIB * 4**k for k in range(11)],  # item 5: 1 KiB .. 1 GiB, in powers of 4
    pipe_scale_max=256 * MIB,  # the Pipe baseline stops here (time and memory)
    rss_size=1 * GB,        # item 6
    cold_reps=3,            # calls timed in each cold child (the first is the cold one)
)
SMOKE = dict(
    big=1 * MB, bytes_size=512 * KIB, empty_sizes=[1 * MB], rounds=2,
    empty_reps=5, scale_sizes=[KIB, MIB], pipe_scale_max=MIB, rss_size=8 * MB,
    cold_reps=2,
)

#: A glibc (2.35+) setting under which malloc asks for transparent huge pages for its big
#: chunks: a new 50 MB ``bytes`` then costs 25 page faults of 2 MiB, not 12,000 of 4 KiB.
#: Measured as a configuration (an environment variable; nothing in corral changes).
TUNED_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}

# The brief's targets; every other row is for information.
TARGET_SUM_RATIO = 2.0      # 100 MB to the worker + sum, whole call <= 2x memcpy
TARGET_ECHO_RATIO = 4.0     # 100 MB array echo <= 4x memcpy
TARGET_BYTES_MS = 40.0      # 50 MB bytes echo, absolute
TARGET_EMPTY_MS = 1.0       # corral.empty array to the worker, any size, absolute
TARGET_RSS_X = 2.0          # peak RSS above baseline, in array sizes (see the README)
RSS_SLACK = 0.1             # "~2x": the interpreter's own growth during the call


def log(msg: str) -> None:
    print(f"[bench_values {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def label(n: int) -> str:
    """1 KiB / 256 MiB / 1 GiB for powers of two, 100 MB / 1 GB for decimal sizes."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    for unit, name in ((GB, "GB"), (MB, "MB"), (1000, "KB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} B"


def timed_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS and its parts, in bytes, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def host_segments_made() -> int | None:
    """How many shared-memory segments this process's pool has created so far (a
    diagnostic: it reads the pool's id counter, changes nothing)."""
    try:
        from corral.protocol import shm

        pool = shm._pool  # noqa: SLF001
        if pool is None:
            return 0
        return int(repr(pool._ids)[len("count("):-1]) - 1  # noqa: SLF001
    except Exception:  # noqa: BLE001 - internals moved: no diagnostic
        return None


def floats(nbytes: int, random: bool = False) -> np.ndarray:
    """A pre-faulted float32 array of ``nbytes`` bytes."""
    n = nbytes // 4
    if random:
        return np.random.default_rng(0).random(n, dtype=np.float32)
    return np.full(n, 1.5, dtype=np.float32)


def memcpy_pair(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and destination for the memcpy baseline, both pre-faulted."""
    src = floats(nbytes)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return src, dst


# -- the Pipe baseline ------------------------------------------------------------------------


class PipeValues:
    """The old way: a spawn child over ``multiprocessing.Pipe``; arrays as pickle protocol 5
    with out-of-band buffers (one ``send_bytes`` each), bytes as one ``send_bytes``."""

    name = "Pipe + pickle 5"

    def __init__(self):
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=targets.pipe_values, args=(child,),
                                name="bench-pipe-values", daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid

    def _send_array(self, op: bytes, arr: np.ndarray) -> None:
        bufs: list = []
        head = pickle.dumps(arr, protocol=5, buffer_callback=bufs.append)
        send = self.conn.send_bytes
        send(b"%s:%d" % (op, len(bufs)))
        send(head)
        for b in bufs:
            send(b.raw())

    def sum_array(self, arr: np.ndarray) -> float:
        self._send_array(b"sum", arr)
        return pickle.loads(self.conn.recv_bytes())

    def echo(self, arr: np.ndarray) -> np.ndarray:
        self._send_array(b"echo", arr)
        recv = self.conn.recv_bytes
        n = int(recv())
        head = recv()
        return pickle.loads(head, buffers=[recv() for _ in range(n)])

    def echo_bytes(self, data: bytes) -> bytes:
        self.conn.send_bytes(b"bytes")
        self.conn.send_bytes(data)
        return self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()  # the child sees EOF and returns
        self.proc.join(10.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# -- timing ------------------------------------------------------------------------------------


def interleave(ops: dict[str, Callable[[], Any]], rounds: int, what: str = "",
               limits: dict[str, int] | None = None) -> dict[str, list[float]]:
    """``rounds`` rounds; each runs every op once (an op in ``limits`` only in its first
    ``limits[op]`` rounds), in an order that rotates (and flips) every round, so that no op
    always follows the same one. The garbage collector is off while ops run (they make no
    cycles: segments go back through reference counting) and collects between some rounds:
    a collection before every call would leave both vCPUs idle and make every small call
    pay a cold wake-up (+0.2-0.3 ms at 1 KiB)."""
    names = list(ops)
    limits = limits or {}
    samples: dict[str, list[float]] = {k: [] for k in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if r % 25 == 0:
                gc.collect()
            order = names[r % len(names):] + names[: r % len(names)]
            if r & 1:
                order.reverse()
            for name in order:
                if r < limits.get(name, rounds):
                    samples[name].append(timed_ms(ops[name]))
            if what and rounds >= 5 and (r + 1) % max(1, rounds // 3) == 0:
                log(f"  {what}: round {r + 1}/{rounds}")
    finally:
        if was_enabled:
            gc.enable()
    return samples


# -- child host processes (fresh pools) ----------------------------------------------------------


def run_child(args: list[str], timeout: float = 300.0,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as a child host (``--child ...``); its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=HERE,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warm_worker(w: Any, oob: bool = True) -> None:
    """What every child host does first, untimed: numpy imported in the worker (a small
    array travels inline), and with ``oob`` the first-use costs of the out-of-band path
    (ctypes, the pools, the fd socket) paid on both sides with a 64 KiB array and 64 KiB of
    bytes. What stays cold is the big segments.

    Without ``oob`` no small segment stays idle in either pool: the pool keeps at most
    1 GiB of idle segments in all (shm.MAX_IDLE_BYTES), so a 1 GiB segment can be kept
    for reuse only when nothing else is idle."""
    w.call("echo", np.zeros(256, dtype=np.float32))
    if oob:
        w.call("echo", np.zeros(16 * KIB, dtype=np.float32))
        w.call("echo", bytes(64 * KIB))
    w.call("echo", 0)


def child_cold(op: str, size: int, reps: int) -> dict[str, Any]:
    """The first ``reps`` calls of ``op`` at ``size`` in a fresh host with a fresh worker."""
    src, dst = memcpy_pair(size)
    memcpy = c.median(timed_ms(lambda: np.copyto(dst, src)) for _ in range(3))
    del src, dst
    out: dict[str, Any] = {"op": op, "size_bytes": size, "memcpy_ms": memcpy}
    with corral.Worker(VALUES_REF) as w:
        _warm_worker(w)
        if op == "sum":
            value: Any = floats(size, random=True)
            fn = lambda: w.call("sum_array", value)  # noqa: E731
        elif op == "echo":
            value = floats(size)
            fn = lambda: w.call("echo", value)  # noqa: E731
        elif op == "bytes":
            value = b"\x01" * size
            fn = lambda: w.call("echo", value)  # noqa: E731
        elif op == "empty":
            made = host_segments_made()
            t0 = time.perf_counter_ns()
            value = corral.empty(size // 4, np.float32)
            out["alloc_ms"] = (time.perf_counter_ns() - t0) / 1e6
            out["alloc_new_segments"] = _diff(host_segments_made(), made)
            out["fill_ms"] = timed_ms(lambda: value.fill(1.0))
            fn = lambda: w.call("touch", value)  # noqa: E731
        else:
            raise SystemExit(f"unknown cold op {op!r}")
        calls, made_per_call = [], []
        for _ in range(reps):
            made = host_segments_made()
            calls.append(timed_ms(fn))
            made_per_call.append(_diff(host_segments_made(), made))
        out["calls_ms"] = calls
        out["host_segments_made_per_call"] = made_per_call
    out["first_ms"] = calls[0]
    out["first_ratio_vs_memcpy"] = calls[0] / memcpy
    return out


def _diff(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


def child_scale(size: int, reps: int, pipe_reps: int) -> dict[str, Any]:
    """Array echo at one size in a fresh host: memcpy, corral and (if ``pipe_reps``) the
    Pipe, interleaved; ``reps`` timed rounds after a warm-up."""
    src, dst = memcpy_pair(size)
    arr = src  # the echo sends the memcpy's source
    out: dict[str, Any] = {"size_bytes": size, "path": "shm" if size >= 64 * KIB else "inline"}
    with contextlib.ExitStack() as stack:
        w = corral.Worker(VALUES_REF).start()
        stack.callback(w.stop)
        pipe = None
        if pipe_reps:
            pipe = PipeValues()
            stack.callback(pipe.close)
        # At 1 GiB, a 64 KiB segment left idle would make the pool drop (and re-make) the
        # 1 GiB ones on every call: measure the best case, a pool holding only this size.
        out["small_segments_idle"] = size < 512 * MIB
        _warm_worker(w, oob=out["small_segments_idle"])
        ops: dict[str, Callable[[], Any]] = {
            "memcpy": lambda: np.copyto(dst, src),
            "corral": lambda: w.call("echo", arr),
        }
        if pipe is not None:
            ops["pipe"] = lambda: pipe.echo(arr)
        # Warm-up: the first echo makes the segments (cold, reported separately); the next
        # ones let a Release that lost the race against the next call settle into the pool.
        made0 = host_segments_made()
        warm = [timed_ms(ops["corral"]) for _ in range(3 if size < GIB else 2)]
        back = w.call("echo", arr)
        assert back.shape == arr.shape and back[0] == arr[0] and back[-1] == arr[-1]
        del back
        if pipe is not None:
            back = pipe.echo(arr)
            assert back.shape == arr.shape and back[-1] == arr[-1]
            del back
            pipe.echo(arr)
        made1 = host_segments_made()
        samples = interleave(ops, reps, limits={"pipe": pipe_reps})
        out["host_segments_made_warmup"] = _diff(made1, made0)
        out["host_segments_made_timed"] = _diff(host_segments_made(), made1)
    out["warmup_ms"] = warm
    out["memcpy_ms"] = c.median(samples["memcpy"])
    out["corral_ms"] = c.median(samples["corral"])
    out["corral_min_ms"] = min(samples["corral"])
    out["corral_max_ms"] = max(samples["corral"])
    out["ratio"] = c.median(a / b for a, b in zip(samples["corral"], samples["memcpy"]))
    out["reps"] = reps
    if pipe_reps:
        out["pipe_ms"] = c.median(samples["pipe"])
        out["pipe_ratio"] = c.median(a / b for a, b in zip(samples["pipe"], samples["memcpy"]))
        out["corral_vs_pipe"] = c.median(
            a / b for a, b in zip(samples["corral"], samples["pipe"]))
        out["pipe_reps"] = len(samples["pipe"])
    out["samples"] = samples
    return out


def child_bytes(size: int, rounds: int) -> dict[str, Any]:
    """Warm ``bytes`` echo with its memcpy and a fresh ``bytes`` copy, interleaved. Run
    under TUNED_ENV; corral's worker inherits the host's environment."""
    data = b"\x01" * size
    data_np = np.frombuffer(data, dtype=np.uint8)
    bdst = np.empty(size, dtype=np.uint8)
    np.copyto(bdst, data_np)
    view = memoryview(data)
    with corral.Worker(VALUES_REF) as w:
        _warm_worker(w)
        assert w.call("echo", data) == data
        for _ in range(3):
            w.call("echo", data)
        s = interleave({"memcpy_bytes": lambda: np.copyto(bdst, data_np),
                        "bytes_copy": lambda: bytes(view),
                        "corral_bytes": lambda: w.call("echo", data)}, rounds)
        with open(f"/proc/{w.pid}/environ", "rb") as f:
            worker_env = f.read().split(b"\0")
    out: dict[str, Any] = {k + "_ms": c.median(v) for k, v in s.items()}
    out.update(
        size_bytes=size, rounds=rounds, glibc=os.confstr("CS_GNU_LIBC_VERSION"),
        glibc_tunables=os.environ.get("GLIBC_TUNABLES"),
        worker_glibc_tunables=next((e.decode().split("=", 1)[1] for e in worker_env
                                    if e.startswith(b"GLIBC_TUNABLES=")), None),
        ratio_bytes_vs_memcpy=per_round_ratio(s["corral_bytes"], s["memcpy_bytes"]),
        ratio_bytes_copy_vs_memcpy=per_round_ratio(s["bytes_copy"], s["memcpy_bytes"]),
        samples=s)
    return out


def child_rss(mode: str, size: int) -> dict[str, Any]:
    """Peak RSS of a fresh host and its child around one echo of a ``size``-byte array.

    ``corral``: a plain numpy array; ``corral_empty``: one from ``corral.empty``; ``pipe``:
    the Pipe baseline. Host figures come from this process, the child's from its
    /proc/<pid>/status, read while the child is still running."""
    out: dict[str, Any] = {"mode": mode, "size_bytes": size}
    with contextlib.ExitStack() as stack:
        if mode.startswith("corral"):
            w = corral.Worker(VALUES_REF).start()
            stack.callback(w.stop)
            _warm_worker(w)
            child_pid = w.pid
            echo = lambda a: w.call("echo", a)  # noqa: E731
        elif mode == "pipe":
            pipe = PipeValues()
            stack.callback(pipe.close)
            pipe.echo(np.zeros(16 * KIB, dtype=np.float32))
            child_pid = pipe.pid
            echo = pipe.echo
        else:
            raise SystemExit(f"unknown rss mode {mode!r}")
        gc.collect()
        time.sleep(0.1)
        h0, w0 = status(), status(child_pid)
        if mode == "corral_empty":
            arr = corral.empty(size // 4, np.float32)
        else:
            arr = np.empty(size // 4, np.float32)
        arr.fill(1.0)
        h1 = status()
        t0 = time.perf_counter()
        back = echo(arr)
        out["call_s"] = time.perf_counter() - t0
        h2, w2 = status(), status(child_pid)
        assert back.shape == arr.shape and back[-1] == 1.0
        del back
        gc.collect()
        if mode.startswith("corral"):
            w.call("echo", 0)  # sends the Release of the reply's segment
            time.sleep(0.2)
        h3, w3 = status(), status(child_pid)
    out.update(host_before=h0, host_with_input=h1, host_after_call=h2, host_after_release=h3,
               child_before=w0, child_after_call=w2, child_after_release=w3)
    # Peak above the resting RSS just before the call (the input array already exists:
    # it is the caller's data, not corral's), and above the RSS before the input existed.
    out["host_peak_above_baseline_x"] = (h2["VmHWM"] - h1["VmRSS"]) / size
    out["host_peak_above_pre_input_x"] = (h2["VmHWM"] - h0["VmRSS"]) / size
    out["child_peak_above_baseline_x"] = (w2["VmHWM"] - w0["VmRSS"]) / size
    for who, a, b in (("host", h1, h2), ("child", w0, w2)):
        for part in ("RssAnon", "RssShmem"):
            out[f"{who}_{part}_growth_x"] = (b.get(part, 0) - a.get(part, 0)) / size
    return out


def child_main(args: list[str]) -> int:
    kind, rest = args[0], args[1:]
    if kind == "cold":
        res = child_cold(rest[0], int(rest[1]), int(rest[2]))
    elif kind == "scale":
        res = child_scale(int(rest[0]), int(rest[1]), int(rest[2]))
    elif kind == "rss":
        res = child_rss(rest[0], int(rest[1]))
    elif kind == "bytes":
        res = child_bytes(int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    res["leftover_children"] = [p for p in c.live_children()
                                if "resource_tracker" not in p["cmdline"]]
    print(json.dumps(res))
    return 0


# -- the steady-state measurements (this process) -------------------------------------------------


def per_round_ratio(a: list[float], b: list[float]) -> float:
    return c.median(x / y for x, y in zip(a, b))


def big_values(w: Any, pipe: PipeValues, cfg: dict[str, Any]) -> dict[str, Any]:
    """Items 1-3: 100 MB float32 to the worker + sum, 100 MB array echo, 50 MB bytes echo,
    with their memcpy baselines, the host's own sum, a fresh-bytes copy and the Pipe."""
    n, nb = cfg["big"], cfg["bytes_size"]
    arr = floats(n, random=True)
    dst = np.empty_like(arr)
    np.copyto(dst, arr)
    data = b"\x01" * nb
    data_np = np.frombuffer(data, dtype=np.uint8)
    bdst = np.empty(nb, dtype=np.uint8)
    np.copyto(bdst, data_np)
    view = memoryview(data)
    # The floor of corral's own copy: into a pre-faulted memfd mapping like a segment's
    # (shared memory gets 4 KiB pages where numpy's arrays may get transparent huge pages).
    fd = os.memfd_create("bench-values", os.MFD_CLOEXEC)
    os.ftruncate(fd, n)
    mm = mmap.mmap(fd, n, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
    os.close(fd)
    shm_dst = np.frombuffer(mm, dtype=np.float32, count=n // 4)

    expected = float(arr.sum())
    got = w.call("sum_array", arr)
    assert abs(got - expected) <= 1e-3 * abs(expected), (got, expected)
    assert abs(pipe.sum_array(arr) - expected) <= 1e-3 * abs(expected)
    back = w.call("echo", arr)
    assert np.array_equal(back, arr)
    del back
    assert w.call("echo", data) == data and pipe.echo_bytes(data) == data
    run_times: list[float] = []

    def corral_sum_submit() -> None:
        fut = w.submit("sum_array", arr)
        fut.result()
        run_times.append(fut.run_time * 1e3)

    ops: dict[str, Callable[[], Any]] = {
        "memcpy": lambda: np.copyto(dst, arr),
        "memcpy_to_memfd": lambda: np.copyto(shm_dst, arr),
        "host_sum": lambda: arr.sum(),
        "corral_sum": lambda: w.call("sum_array", arr),
        "corral_sum_submit": corral_sum_submit,
        "corral_echo": lambda: w.call("echo", arr),
        "pipe_sum": lambda: pipe.sum_array(arr),
        "pipe_echo": lambda: pipe.echo(arr),
        "memcpy_bytes": lambda: np.copyto(bdst, data_np),
        "bytes_copy": lambda: bytes(view),
        "corral_bytes": lambda: w.call("echo", data),
        "pipe_bytes": lambda: pipe.echo_bytes(data),
    }
    log("  warm-up (the first calls make the segments; a Release that loses the race "
        "against the next call makes one more)")
    for _ in range(3):
        for name in ("corral_sum", "corral_echo", "corral_bytes"):
            ops[name]()
    made0 = host_segments_made()
    s = interleave(ops, cfg["rounds"], "100 MB / 50 MB rounds")
    out: dict[str, Any] = {"size_bytes": n, "bytes_size_bytes": nb,
                           "rounds": cfg["rounds"],
                           "host_segments_made_timed": _diff(host_segments_made(), made0)}
    for k, v in s.items():
        out[f"{k}_ms"] = c.median(v)
    out["corral_sum_worker_run_ms"] = c.median(run_times)
    # The blocking call's time minus the worker's run time of the method, paired by round
    # (run_time comes from a submit() in the same round: call() does not expose it).
    transfer = [t - rt for t, rt in zip(s["corral_sum"], run_times)]
    out["corral_sum_transfer_ms"] = c.median(transfer)
    mc, mb = s["memcpy"], s["memcpy_bytes"]
    out["ratio_sum_vs_memcpy"] = per_round_ratio(s["corral_sum"], mc)
    out["ratio_sum_spread"] = c.spread([a / b for a, b in zip(s["corral_sum"], mc)])
    out["ratio_host_sum_vs_memcpy"] = per_round_ratio(s["host_sum"], mc)
    out["ratio_worker_run_vs_memcpy"] = per_round_ratio(run_times, mc)
    out["ratio_transfer_vs_memcpy"] = per_round_ratio(transfer, mc)
    out["ratio_echo_vs_memcpy"] = per_round_ratio(s["corral_echo"], mc)
    out["ratio_echo_spread"] = c.spread([a / b for a, b in zip(s["corral_echo"], mc)])
    out["ratio_bytes_vs_memcpy"] = per_round_ratio(s["corral_bytes"], mb)
    out["ratio_bytes_copy_vs_memcpy"] = per_round_ratio(s["bytes_copy"], mb)
    out["ratio_pipe_sum_vs_memcpy"] = per_round_ratio(s["pipe_sum"], mc)
    out["ratio_pipe_echo_vs_memcpy"] = per_round_ratio(s["pipe_echo"], mc)
    out["ratio_pipe_bytes_vs_memcpy"] = per_round_ratio(s["pipe_bytes"], mb)
    out["ratio_sum_vs_pipe"] = per_round_ratio(s["corral_sum"], s["pipe_sum"])
    out["ratio_echo_vs_pipe"] = per_round_ratio(s["corral_echo"], s["pipe_echo"])
    out["ratio_bytes_vs_pipe"] = per_round_ratio(s["corral_bytes"], s["pipe_bytes"])
    out["ratio_memcpy_to_memfd_vs_memcpy"] = per_round_ratio(s["memcpy_to_memfd"], mc)
    out["samples"] = s
    out["worker_run_samples"] = run_times
    del shm_dst
    mm.close()
    log(f"  sum: corral {out['corral_sum_ms']:.1f} ms, memcpy {out['memcpy_ms']:.1f} ms "
        f"({out['ratio_sum_vs_memcpy']:.2f}x); echo {out['corral_echo_ms']:.1f} ms "
        f"({out['ratio_echo_vs_memcpy']:.2f}x); bytes echo {out['corral_bytes_ms']:.1f} ms")
    return out


def empty_arrays(w: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Item 4: ``corral.empty`` arrays to the worker, which answers with their shape and two
    elements; all sizes interleaved with a plain call (an int echo)."""
    arrays = {}
    for size in cfg["empty_sizes"]:
        a = corral.empty(size // 4, np.float32)
        a.fill(1.0)
        assert w.call("touch", a) == [[size // 4], 2.0]  # the worker maps the segment here
        arrays[size] = a
    ops: dict[str, Callable[[], Any]] = {"plain": lambda: w.call("echo", 0)}
    for size, a in arrays.items():
        ops[str(size)] = lambda a=a: w.call("touch", a)
    for fn in ops.values():
        for _ in range(5):
            fn()
    made0 = host_segments_made()
    s = interleave(ops, cfg["empty_reps"], "corral.empty rounds")
    out: dict[str, Any] = {"reps": cfg["empty_reps"],
                           "host_segments_made_timed": _diff(host_segments_made(), made0),
                           "plain_call_p50_ms": c.median(s["plain"]), "sizes": []}
    for size, a in arrays.items():
        dst = np.empty_like(a)
        np.copyto(dst, a)
        memcpy = c.median(timed_ms(lambda: np.copyto(dst, a)) for _ in range(5))
        del dst
        v = s[str(size)]
        row = {"size_bytes": size, "p50_ms": c.median(v), "p90_ms": c.percentile(v, 90),
               "max_ms": max(v), "memcpy_ms": memcpy, "ratio_vs_memcpy": c.median(v) / memcpy,
               "ratio_vs_plain_call": per_round_ratio(v, s["plain"])}
        out["sizes"].append(row)
        log(f"  corral.empty {label(size)}: p50 {row['p50_ms'] * 1e3:.0f} us, "
            f"memcpy {memcpy:.2f} ms")
    out["samples"] = s
    del arrays, ops
    gc.collect()
    return out


def steady_state(cfg: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        log("starting a corral worker (Values) and the Pipe child")
        w = corral.Worker(VALUES_REF).start()
        stack.callback(w.stop)
        pipe = PipeValues()
        stack.callback(pipe.close)
        _warm_worker(w)
        pipe.echo(np.zeros(16 * KIB, dtype=np.float32))
        log(f"items 1-3: {label(cfg['big'])} array sum and echo, {label(cfg['bytes_size'])} "
            "bytes echo, interleaved with memcpy and the Pipe")
        res["big"] = big_values(w, pipe, cfg)
        pipe.close()
        log("item 4: corral.empty arrays to the worker")
        res["empty"] = empty_arrays(w, cfg)
        res["worker_rss_after"] = c.proc_memory(w.pid)
        log("stopping the worker and the Pipe child")
    return res


def cold_calls(cfg: dict[str, Any]) -> dict[str, Any]:
    """First calls in fresh hosts (one child host per op and size)."""
    out: dict[str, Any] = {}
    jobs = [("sum", cfg["big"]), ("echo", cfg["big"]), ("bytes", cfg["bytes_size"])]
    jobs += [("empty", s) for s in cfg["empty_sizes"]]
    for op, size in jobs:
        res = run_child(["cold", op, str(size), str(cfg["cold_reps"])])
        out[f"{op}_{size}"] = res
        log(f"  cold {op} {label(size)}: calls {', '.join(f'{t:.1f}' for t in res['calls_ms'])}"
            f" ms (memcpy {res['memcpy_ms']:.2f} ms)")
    return out


def scaling(cfg: dict[str, Any], smoke: bool) -> list[dict[str, Any]]:
    """Item 5: array echo from 1 KiB to 1 GiB, one fresh child host per size."""
    rows = []
    for size in cfg["scale_sizes"]:
        if smoke:
            reps = 5
        elif size <= MIB:
            reps = 201
        elif size <= 16 * MIB:
            reps = 31
        elif size <= 256 * MIB:
            reps = 9
        else:
            reps = 3
        pipe_reps = 0 if size > cfg["pipe_scale_max"] else (reps if size <= 16 * MIB else 5)
        row = run_child(["scale", str(size), str(reps), str(pipe_reps)], timeout=600)
        row["label"] = label(size)
        rows.append(row)
        pipe_txt = (f", Pipe {row['pipe_ms']:.3f} ms ({row['pipe_ratio']:.1f}x)"
                    if "pipe_ms" in row else "")
        log(f"  echo {row['label']}: corral {row['corral_ms']:.3f} ms, memcpy "
            f"{row['memcpy_ms']:.3f} ms ({row['ratio']:.2f}x){pipe_txt}")
    return rows


def bytes_tuned(cfg: dict[str, Any]) -> dict[str, Any]:
    res = run_child(["bytes", str(cfg["bytes_size"]), str(cfg["rounds"])], env=TUNED_ENV)
    log(f"  {label(res['size_bytes'])} bytes echo under {TUNED_ENV}: "
        f"{res['corral_bytes_ms']:.1f} ms (bytes(view) {res['bytes_copy_ms']:.1f} ms, "
        f"memcpy {res['memcpy_bytes_ms']:.1f} ms)")
    return res


def rss(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for mode in ("corral", "corral_empty", "pipe"):
        res = run_child(["rss", mode, str(cfg["rss_size"])], timeout=600)
        out[mode] = res
        log(f"  {mode}: host peak +{res['host_peak_above_baseline_x']:.2f}x size, child peak "
            f"+{res['child_peak_above_baseline_x']:.2f}x size ({res['call_s']:.2f} s)")
    return out


# -- report ----------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: str) -> str | None:
    """A log-log plot of echo time against size; returns why it was skipped, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (.venv/bin/pip install matplotlib)"
    sizes = [r["size_bytes"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax.loglog(sizes, [r["corral_ms"] for r in rows], "o-", label="corral echo (warm)")
    ax.loglog(sizes, [r["memcpy_ms"] for r in rows], "s-", label="memcpy (np.copyto)")
    ax.loglog(sizes, [2 * r["memcpy_ms"] for r in rows], ":", color="gray",
              label="2 x memcpy (the two copies of an echo)")
    piped = [r for r in rows if "pipe_ms" in r]
    if piped:
        ax.loglog([r["size_bytes"] for r in piped], [r["pipe_ms"] for r in piped], "^-",
                  label="Pipe + pickle 5 echo")
    ax.axvline(64 * KIB, color="gray", lw=0.8, ls="--")
    ax.text(64 * KIB, ax.get_ylim()[1], " shm threshold 64 KiB", va="top", fontsize=8)
    ax.set_xlabel("array size (bytes)")
    ax.set_ylabel("time (ms)")
    ax.set_title("float32 array echo: time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax2.semilogx(sizes, [r["ratio"] for r in rows], "o-", label="corral / memcpy")
    if piped:
        ax2.semilogx([r["size_bytes"] for r in piped], [r["pipe_ratio"] for r in piped], "^-",
                     label="Pipe / memcpy")
    ax2.axhline(TARGET_ECHO_RATIO, color="red", lw=0.8, ls="--", label="target 4x (100 MB)")
    ax2.set_yscale("log")
    ax2.set_xlabel("array size (bytes)")
    ax2.set_ylabel("ratio to memcpy of the same bytes")
    ax2.set_title("float32 array echo: ratio to memcpy")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    big, emp, cold, rs = res["big"], res["empty"], res["cold"], res["rss"]
    n, nb = label(big["size_bytes"]), label(big["bytes_size_bytes"])
    memcpy_n, memcpy_b = f"memcpy {n}", f"memcpy {nb}"

    def row(metric, unit, cor, base_name, base, ratio, target="-", met=None):
        return {"metric": metric, "unit": unit, "corral": cor, "baseline_name": base_name,
                "baseline": base, "ratio": ratio, "target": target, "met": met}

    def cold_row(what, key):
        cr = cold[key]
        return row(f"{what}, first call (cold)", "ms", cr["first_ms"],
                   f"memcpy {label(cr['size_bytes'])}", cr["memcpy_ms"],
                   cr["first_ratio_vs_memcpy"])

    size = big["size_bytes"]
    rows = [
        row(f"{n} float32 to worker + `float(arr.sum())` back (warm)", "ms",
            big["corral_sum_ms"], memcpy_n, big["memcpy_ms"], big["ratio_sum_vs_memcpy"],
            f"<= {TARGET_SUM_RATIO:g}x memcpy (whole call: transfer + sum)",
            big["ratio_sum_vs_memcpy"] <= TARGET_SUM_RATIO),
        row("(part) memcpy into a pre-faulted memfd mapping (what corral's copy-in does)",
            "ms", big["memcpy_to_memfd_ms"], memcpy_n, big["memcpy_ms"],
            big["ratio_memcpy_to_memfd_vs_memcpy"]),
        row("(part) host `arr.sum()` of the same array: the sum alone", "ms",
            big["host_sum_ms"], memcpy_n, big["memcpy_ms"], big["ratio_host_sum_vs_memcpy"]),
        row("(part) the worker's run time of `sum_array` (its sum)", "ms",
            big["corral_sum_worker_run_ms"], memcpy_n, big["memcpy_ms"],
            big["ratio_worker_run_vs_memcpy"]),
        row("(part) transfer alone: the call minus the worker's run time", "ms",
            big["corral_sum_transfer_ms"], memcpy_n, big["memcpy_ms"],
            big["ratio_transfer_vs_memcpy"]),
        cold_row(f"{n} to worker + sum", f"sum_{size}"),
        row(f"{n} to worker + sum (warm)", "ms", big["corral_sum_ms"], PipeValues.name,
            big["pipe_sum_ms"], big["ratio_sum_vs_pipe"]),
        row(f"{n} float32 array echo (warm)", "ms", big["corral_echo_ms"], memcpy_n,
            big["memcpy_ms"], big["ratio_echo_vs_memcpy"],
            f"<= {TARGET_ECHO_RATIO:g}x memcpy", big["ratio_echo_vs_memcpy"] <= TARGET_ECHO_RATIO),
        cold_row(f"{n} array echo", f"echo_{size}"),
        row(f"{n} array echo (warm)", "ms", big["corral_echo_ms"], PipeValues.name,
            big["pipe_echo_ms"], big["ratio_echo_vs_pipe"]),
        row(f"{nb} `bytes` echo (warm)", "ms", big["corral_bytes_ms"], memcpy_b,
            big["memcpy_bytes_ms"], big["ratio_bytes_vs_memcpy"],
            f"<= {TARGET_BYTES_MS:g} ms", big["corral_bytes_ms"] <= TARGET_BYTES_MS),
        row(f"(part) `bytes(view)`: one {nb} copy into a new bytes object", "ms",
            big["bytes_copy_ms"], memcpy_b, big["memcpy_bytes_ms"],
            big["ratio_bytes_copy_vs_memcpy"]),
        row(f"{nb} bytes echo (warm), host and worker with `GLIBC_TUNABLES="
            f"{TUNED_ENV['GLIBC_TUNABLES']}`", "ms", res["bytes_tuned"]["corral_bytes_ms"],
            memcpy_b, res["bytes_tuned"]["memcpy_bytes_ms"],
            res["bytes_tuned"]["ratio_bytes_vs_memcpy"]),
        row(f"(part) `bytes(view)` of {nb} with that setting", "ms",
            res["bytes_tuned"]["bytes_copy_ms"], memcpy_b,
            res["bytes_tuned"]["memcpy_bytes_ms"], res["bytes_tuned"]["ratio_bytes_copy_vs_memcpy"]),
        cold_row(f"{nb} bytes echo", f"bytes_{big['bytes_size_bytes']}"),
        row(f"{nb} bytes echo (warm)", "ms", big["corral_bytes_ms"], PipeValues.name,
            big["pipe_bytes_ms"], big["ratio_bytes_vs_pipe"]),
    ]
    for e in emp["sizes"]:
        s = e["size_bytes"]
        rows.append(row(f"`corral.empty` {label(s)} to worker, small reply (warm p50)", "ms",
                        e["p50_ms"], f"memcpy {label(s)}", e["memcpy_ms"],
                        e["ratio_vs_memcpy"], f"<= {TARGET_EMPTY_MS:g} ms",
                        e["p50_ms"] <= TARGET_EMPTY_MS))
    for e in emp["sizes"]:
        rows.append(cold_row(f"`corral.empty` {label(e['size_bytes'])} to worker",
                             f"empty_{e['size_bytes']}"))
    r, re_, rp = rs["corral"], rs["corral_empty"], rs["pipe"]
    g = label(r["size_bytes"])
    limit = TARGET_RSS_X + RSS_SLACK
    rows += [
        row(f"host peak RSS above baseline, {g} array echo", "x size",
            r["host_peak_above_baseline_x"], PipeValues.name, rp["host_peak_above_baseline_x"],
            c.ratio(r["host_peak_above_baseline_x"], rp["host_peak_above_baseline_x"]),
            f"<= ~{TARGET_RSS_X:g}x size", r["host_peak_above_baseline_x"] <= limit),
        row(f"worker peak RSS above baseline, {g} array echo", "x size",
            r["child_peak_above_baseline_x"], "Pipe child",
            rp["child_peak_above_baseline_x"],
            c.ratio(r["child_peak_above_baseline_x"], rp["child_peak_above_baseline_x"]),
            f"<= ~{TARGET_RSS_X:g}x size (1x copy + 1x shared input)",
            r["child_peak_above_baseline_x"] <= limit),
        row(f"host peak RSS above baseline, {g} `corral.empty` echo", "x size",
            re_["host_peak_above_baseline_x"], PipeValues.name,
            rp["host_peak_above_baseline_x"],
            c.ratio(re_["host_peak_above_baseline_x"], rp["host_peak_above_baseline_x"])),
        row(f"worker peak RSS above baseline, {g} `corral.empty` echo", "x size",
            re_["child_peak_above_baseline_x"], "Pipe child",
            rp["child_peak_above_baseline_x"],
            c.ratio(re_["child_peak_above_baseline_x"], rp["child_peak_above_baseline_x"])),
    ]
    return rows


def scaling_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| size | path | corral echo | memcpy | ratio | Pipe + pickle 5 echo | "
             "Pipe / memcpy | corral / Pipe |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        pipe = ("| - | - | - |" if "pipe_ms" not in r else
                f"| {c.fmt(r['pipe_ms'])} ms | {r['pipe_ratio']:.2f}x | "
                f"{r['corral_vs_pipe']:.2f}x |")
        lines.append(f"| {r['label']} | {r['path']} | {c.fmt(r['corral_ms'])} ms | "
                     f"{c.fmt(r['memcpy_ms'])} ms | {r['ratio']:.2f}x {pipe}")
    return "\n".join(lines)


def rss_table(rs: dict[str, Any]) -> str:
    def gib(b: int) -> str:
        return f"{b / GIB:.2f}"

    lines = ["| run | side | peak above baseline | RssAnon growth | RssShmem growth | "
             "VmHWM | VmRSS after the call |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    names = {"corral": "corral, numpy array", "corral_empty": "corral, `corral.empty` array",
             "pipe": PipeValues.name}
    for mode, r in rs.items():
        for side, key, a in (("host", "host", "host_after_call"),
                             ("worker / child", "child", "child_after_call")):
            lines.append(
                f"| {names[mode]} | {side} | {r[f'{key}_peak_above_baseline_x']:.2f}x | "
                f"{r[f'{key}_RssAnon_growth_x']:+.2f}x | {r[f'{key}_RssShmem_growth_x']:+.2f}x | "
                f"{gib(r[a]['VmHWM'])} GiB | {gib(r[a]['VmRSS'])} GiB |")
    return "\n".join(lines)


def render_md(data: dict[str, Any]) -> str:
    meta, big = data["meta"], data["big"]
    rss_size = label(data["rss"]["corral"]["size_bytes"])
    lines = [
        f"# corral values benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}; corral {meta['corral']} at {meta['corral_commit'] or '?'}; "
        f"Python {meta['python']}, numpy {meta['numpy']}; {meta['cpu_count']} CPUs "
        f"({meta['cpu_model'] or 'unknown model'}); {meta['mem_total_gib']:.0f} GiB RAM; "
        f"{meta.get('glibc', '?')}; transparent huge pages: anon `{meta.get('thp_anon', '?')}`, "
        f"shmem `{meta.get('thp_shmem', '?')}`; "
        f"run took {meta['wall_s']:.0f} s. MB = 10^6 bytes, MiB = 2^20. memcpy = "
        "`np.copyto` into a pre-faulted destination of the same size, interleaved with "
        f"corral in the same run ({big['rounds']} rounds for the {label(big['size_bytes'])} and "
        f"{label(big['bytes_size_bytes'])} rows).",
        "",
        c.markdown_table(data["rows"]),
        "",
        "Ratio = corral / baseline: the median of per-round ratios for warm rows, so it can "
        "differ slightly from the quotient of the two columns. Cold rows: the first call of "
        "that size in a fresh host process with a fresh worker (numpy and the out-of-band "
        "path already warmed with 64 KiB values), against a memcpy measured in that "
        "process. RSS rows: multiples of the array size, peak (VmHWM) above the RSS just "
        "before the call, the input array already allocated.",
        "",
        "## Array echo from 1 KiB to 1 GiB",
        "",
        "One fresh host process per size (an empty shared-memory pool), warm-up calls, then "
        "memcpy, corral and the Pipe interleaved. Values below 64 KiB travel inside the "
        "msgpack frame (`inline`); from 64 KiB on, through shared memory (`shm`).",
        "",
        scaling_table(data["scaling"]),
        "",
        ("Plot: `values.png`." if data["plot"] is None else f"No plot: {data['plot']}."),
        "",
        f"## Peak RSS around one {rss_size} echo",
        "",
        "Fresh host process per run. Growth of RssAnon (private memory) and RssShmem (pages "
        "of memfd segments mapped in the process) from just before the call to just after "
        "it, in multiples of the array size; the host's baseline already holds the input "
        "array.",
        "",
        rss_table(data["rss"]),
    ]
    lines += c.verdict_lines(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def child_option(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)

    args, cfg, out_dir = c.command_line(__doc__, "values.json, values.md and values.png",
                                        FULL, SMOKE, argv, child_option)
    if args.child:
        return child_main(args.child)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "smoke" if args.smoke else "full"
    meta["numpy"] = np.__version__
    meta["glibc"] = os.confstr("CS_GNU_LIBC_VERSION")
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            meta["thp_anon"] = f.read().strip()
        with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as f:
            meta["thp_shmem"] = f.read().strip()
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        meta["mem_total_gib"] = int(f.readline().split()[1]) / (1024 * 1024)
    results: dict[str, Any] = {"meta": meta, "config": cfg}

    log("cold: first calls, one fresh host process per op and size")
    results["cold"] = cold_calls(cfg)
    results.update(steady_state(cfg))
    log("item 3 again, in a child host with malloc on transparent huge pages")
    results["bytes_tuned"] = bytes_tuned(cfg)
    log("item 5: array echo scaling, one fresh host process per size")
    results["scaling"] = scaling(cfg, args.smoke)
    log(f"item 6: peak RSS around a {label(cfg['rss_size'])} echo (fresh host processes)")
    results["rss"] = rss(cfg)

    png = os.path.join(out_dir, "values.png")
    results["plot"] = plot(results["scaling"], png)
    if results["plot"] is not None:
        log(f"no plot: {results['plot']}")

    in_child_hosts = [
        dict(p, where=f"child host ({key})")
        for key, section in (("cold", results["cold"].values()), ("rss", results["rss"].values()),
                             ("scaling", results["scaling"]), ("bytes", [results["bytes_tuned"]]))
        for r in section for p in r["leftover_children"]]
    results["leftover_children"] = c.leftover_children(log, in_child_hosts)

    meta["wall_s"] = time.perf_counter() - t_start
    results["rows"] = table_rows(results)
    results["targets"] = {
        "sum_ratio_max": TARGET_SUM_RATIO, "echo_ratio_max": TARGET_ECHO_RATIO,
        "bytes_echo_ms_max": TARGET_BYTES_MS, "empty_ms_max": TARGET_EMPTY_MS,
        "rss_x_max": TARGET_RSS_X, "rss_slack_x": RSS_SLACK,
        "met": c.met(results["rows"]),
    }
    c.write_results(out_dir, "values", results, render_md(results))
    log(f"wrote {os.path.join(out_dir, 'values.json')} and values.md"
        f"{'' if results['plot'] else ' and values.png'} in {meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
