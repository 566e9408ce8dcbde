"""Shared helpers of the benchmarks: statistics, process facts, pinning, output."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))

# -- command line ---------------------------------------------------------------------------


def command_line(doc: str, results: str, full: dict[str, Any], smoke: dict[str, Any],
                 argv: list[str] | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None,
                 ) -> tuple[argparse.Namespace, dict[str, Any], str]:
    """The options every benchmark takes: ``--smoke`` (alias ``--quick``: tiny counts, a
    check that the script still runs; results go to benchmarks/results/smoke/) and ``--out
    DIR``; ``extra`` adds a script's own. Returns the arguments, the configuration (a copy
    of ``smoke`` or ``full``) and the results folder, made."""
    ap = argparse.ArgumentParser(description=doc.strip().split("\n\n")[0])
    ap.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                    help="tiny counts; writes to benchmarks/results/smoke/")
    ap.add_argument("--out", help=f"directory for {results}")
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    out_dir = args.out or os.path.join(HERE, "results", "smoke" if args.smoke else "")
    os.makedirs(out_dir, exist_ok=True)
    return args, dict(smoke if args.smoke else full), out_dir


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if len(data) == 1:
        return float(data[0])
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of per-round figures, to show how noisy a figure was."""
    return {"min": min(values), "median": median(values), "max": max(values)}


# -- processes ------------------------------------------------------------------------------


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def cpu_clock(pid: int) -> Callable[[], int]:
    """A function returning the CPU time (ns, all threads, user + system) that process
    ``pid`` has used so far: its POSIX process CPU-time clock (Linux lets a process read
    another's), or, failing that, utime + stime from /proc (clock-tick resolution)."""
    try:
        import ctypes

        clock_id = ctypes.c_int()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.clock_getcpuclockid(pid, ctypes.byref(clock_id)) != 0:
            raise OSError(ctypes.get_errno(), f"clock_getcpuclockid({pid})")
        cid = clock_id.value
        time.clock_gettime_ns(cid)
        return lambda: time.clock_gettime_ns(cid)
    except (OSError, AttributeError):
        ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

        def from_proc() -> int:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) * ns_per_tick

        return from_proc


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` (sched_setaffinity on a pid moves only its main thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that just ended
            pass


def live_children() -> list[dict[str, Any]]:
    """Processes whose parent is this process, with their command lines."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            # The command name is in parentheses and may contain spaces.
            fields = stat[stat.rindex(")") + 2 :].split()
            state, ppid = fields[0], int(fields[1])
            if ppid != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        found.append({"pid": int(name), "state": state, "cmdline": cmd})
    return found


def leftover_children(log: Callable[[str], None],
                      more: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """What a benchmark started and did not stop, checked once it is done: this process's
    live children (multiprocessing's resource tracker left out: it lives until the
    interpreter exits), after the finished multiprocessing children are reaped and up to a
    second given to the others to go; ``more`` adds what child hosts reported. A warning
    is logged when there is any."""
    for ch in multiprocessing.active_children():  # reaps finished ones
        ch.join(1.0)
    deadline = time.monotonic() + 1.0
    while True:
        left = [p for p in live_children() if "resource_tracker" not in p["cmdline"]]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    left += more
    if left:
        log(f"WARNING: child processes still running: {left}")
    return left


# -- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import msgspec

        msgspec_version = msgspec.__version__
    except ImportError:
        msgspec_version = None
    try:
        import corral

        corral_version = corral.__version__
    except ImportError:
        corral_version = None
    return {
        "corral_commit": _git_head(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "loadavg_at_start": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "msgspec": msgspec_version,
        "corral": corral_version,
    }


def _git_head() -> str | None:
    """The checkout's commit, with ``-dirty`` when corral's source (src/) differs from it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) if head else None


# -- output ---------------------------------------------------------------------------------


def write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_results(out_dir: str, name: str, results: dict[str, Any], md: str) -> None:
    """``name``.json and ``name``.md in ``out_dir``; the page is printed too."""
    write_json(os.path.join(out_dir, name + ".json"), results)
    with open(os.path.join(out_dir, name + ".md"), "w") as f:
        f.write(md)
    print(md)


def met(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """metric -> met, for the table rows that have a target."""
    return {r["metric"]: r["met"] for r in rows if r["met"] is not None}


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, thousands separated, no exponent."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """rows: metric, unit, corral, baseline_name, baseline, ratio, target, met."""
    lines = [
        "| metric | corral | baseline | ratio | target | met? |",
        "| --- | ---: | --- | ---: | --- | :---: |",
    ]
    for r in rows:
        unit = r["unit"]
        met = {True: "yes", False: "**NO**", None: "-"}[r["met"]]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            f"| {r['metric']} | {fmt(r['corral'])} {unit} | {r['baseline_name']}: "
            f"{fmt(r['baseline'])} {unit} | {ratio} | {r['target']} | {met} |"
        )
    return "\n".join(lines)


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The closing "Met: ..." and "Missed: ..." lines of a results page, for the rows that
    have a target."""
    lines = []
    for word, verdict in (("Met", True), ("Missed", False)):
        hits = [f"{r['metric']} ({r['target']})" for r in rows if r["met"] is verdict]
        if hits:
            lines += ["", f"{word}: " + "; ".join(hits) + "."]
    return lines
