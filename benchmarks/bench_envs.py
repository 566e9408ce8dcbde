#!/usr/bin/env python
"""Plugin environment benchmark: build time cold and cached, uv against pip and venv.

    .venv/bin/python benchmarks/bench_envs.py            # full run (~3 min on 2 vCPUs)
    .venv/bin/python benchmarks/bench_envs.py --quick    # every msgspec row, 1 rep (~30 s)

What it measures, each against a baseline measured in the same run (benchmarks/README.md):

* cold build: ``EnvironmentCache(fresh root).ensure(["msgspec"])`` (a new virtualenv,
  corral's runtime linked in, msgspec installed, the runtime checked) with uv (its package
  cache warm, as after the first plugin; and empty, ``UV_CACHE_DIR`` a new folder) and
  with the pip fallback, against doing it by hand: ``python -m venv`` + ``pip install``,
  and against the floor, ``python -m venv --without-pip``;
* cached: a second ``ensure()`` of the same requirements (a lookup that starts nothing);
* full run only: the same cold build for ``torch==2.13.0`` (the CPU wheel the machine's
  pip configuration finds on disk), uv and pip, against ``venv`` + ``pip install`` by hand.

Each repetition uses fresh folders and runs the variants in rotating order. Writes
``envs.json`` and ``envs.md`` to ``benchmarks/results/`` (``--quick``:
``benchmarks/results/smoke/``; or ``--out DIR``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _common as c  # noqa: E402
import msgspec  # noqa: E402

from corral.plugins.envs import EnvironmentCache  # noqa: E402
from corral.plugins.installers import find_uv, step_environ  # noqa: E402

FULL = dict(reps=5, pip_reps=3, cached_reps=2000, torch=True)
QUICK = dict(reps=1, pip_reps=1, cached_reps=50, torch=False)
# "a second ensure() is a cheap lookup, no subprocess"
TARGET_CACHED_MS = 1.0
TORCH = "torch==2.13.0"


def log(msg: str) -> None:
    print(f"[bench_envs] {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str], extra_env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, env=step_environ(extra_env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{proc.stdout}\n{proc.stderr}")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


@contextlib.contextmanager
def _env_var(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def cold_builds(work: str, requirements: list[str], reps: int, pip_reps: int,
                with_empty_uv_cache: bool) -> dict[str, Any]:
    """Milliseconds per variant, one list entry per repetition."""
    by_hand = [*requirements, f"msgspec=={msgspec.__version__}"]  # what corral installs
    counter = iter(range(10**6))

    def fresh() -> str:
        return os.path.join(work, f"r{next(counter)}")

    def venv_bare() -> None:
        _run([sys.executable, "-m", "venv", "--without-pip", fresh()])

    def venv_pip() -> None:
        path = fresh()
        _run([sys.executable, "-m", "venv", path])
        _run([os.path.join(path, "bin", "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", *by_hand])

    def corral_uv() -> None:
        EnvironmentCache(fresh(), installer="uv").ensure(requirements)

    def corral_uv_empty_cache() -> None:
        with _env_var("UV_CACHE_DIR", fresh()):
            EnvironmentCache(fresh(), installer="uv").ensure(requirements)

    def corral_pip() -> None:
        EnvironmentCache(fresh(), installer="pip").ensure(requirements)

    variants: dict[str, tuple[Callable[[], None], int]] = {
        "venv_bare": (venv_bare, reps),
        "venv_pip": (venv_pip, pip_reps),
        "corral_uv": (corral_uv, reps),
        "corral_pip": (corral_pip, pip_reps),
    }
    if with_empty_uv_cache:
        variants["corral_uv_empty_cache"] = (corral_uv_empty_cache, reps)
    corral_uv()  # warm uv's package cache (and the OS's file cache) once, untimed
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(max(n for _, n in variants.values())):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            fn, n = variants[name]
            if rep < n:
                times[name].append(_timed(fn))
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    return {name: {"ms": c.median(ts), "runs_ms": ts} for name, ts in times.items()}


def cached(work: str, reps: int) -> dict[str, Any]:
    cache = EnvironmentCache(os.path.join(work, "cached"), installer="uv")
    cold_ms = _timed(lambda: cache.ensure(["msgspec"]))
    ensure_ms = [_timed(lambda: cache.ensure(["msgspec"])) for _ in range(reps)]
    get_ms = [_timed(lambda: cache.get(["msgspec"])) for _ in range(reps)]
    return {"cold_ms": cold_ms, "ensure_ms": c.median(ensure_ms),
            "ensure_p99_ms": c.percentile(ensure_ms, 99), "get_ms": c.median(get_ms),
            "reps": reps}


def _row(metric: str, unit: str, value: float, base_name: str, base: float,
         target: str = "-", met: bool | None = None) -> dict[str, Any]:
    return {"metric": metric, "unit": unit, "corral": value, "baseline_name": base_name,
            "baseline": base, "ratio": c.ratio(value, base), "target": target, "met": met}


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    b = data["msgspec"]
    by_hand = b["venv_pip"]["ms"]
    rows = [
        _row("cold build, msgspec, uv (uv cache warm)", "ms", b["corral_uv"]["ms"],
             "venv + pip install by hand", by_hand),
        _row("cold build, msgspec, uv (uv cache warm)", "ms", b["corral_uv"]["ms"],
             "`python -m venv --without-pip` alone", b["venv_bare"]["ms"]),
    ]
    if "corral_uv_empty_cache" in b:
        rows.append(_row("cold build, msgspec, uv (uv cache empty)", "ms",
                         b["corral_uv_empty_cache"]["ms"], "venv + pip install by hand",
                         by_hand))
    rows.append(_row("cold build, msgspec, pip fallback", "ms", b["corral_pip"]["ms"],
                     "venv + pip install by hand", by_hand))
    ca = data["cached"]
    rows.append(_row("cached `ensure()` (second call), median", "ms", ca["ensure_ms"],
                     "cold uv build of it", ca["cold_ms"], f"<= {TARGET_CACHED_MS:g} ms",
                     ca["ensure_ms"] <= TARGET_CACHED_MS))
    rows.append(_row("cached `get()`, median", "ms", ca["get_ms"], "cold uv build of it",
                     ca["cold_ms"]))
    t = data.get("torch")
    if t:
        rows.append(_row(f"cold build, {TORCH}, uv (uv cache warm)", "ms",
                         t["corral_uv"]["ms"], "venv + pip install by hand",
                         t["venv_pip"]["ms"]))
        rows.append(_row(f"cold build, {TORCH}, pip fallback", "ms", t["corral_pip"]["ms"],
                         "venv + pip install by hand", t["venv_pip"]["ms"]))
    return rows


def render_md(data: dict[str, Any]) -> str:
    meta, cfg = data["meta"], data["config"]
    lines = [
        f"# corral environments benchmark ({meta['mode']} run)",
        "",
        f"{meta['date']}; corral {meta['corral']} at {meta['corral_commit'] or '?'}; "
        f"Python {meta['python']}; {meta['cpu_count']} CPUs "
        f"({meta['cpu_model'] or 'unknown model'}); 1-minute load average "
        f"{meta['loadavg_at_start'][0]:.2f} at the start, {meta['loadavg_at_end'][0]:.2f} at "
        f"the end; run took {meta['wall_s']:.0f} s. uv {data['uv_version']}; "
        f"{cfg['reps']} reps (pip variants {cfg['pip_reps']}), median.",
        "",
        c.markdown_table(data["rows"]),
        "",
        "A cold build is `EnvironmentCache(<new folder>).ensure(requirements)`: a virtualenv, "
        "corral's runtime linked in, the requirements plus msgspec installed, the runtime "
        "checked in a fresh interpreter, the metadata written. \"By hand\" is `python -m "
        "venv` (which installs pip into it) then that pip installing the same packages; "
        "pip reads the machine's pip configuration either way. uv gets it as flags. The "
        "torch rows (full run only) install the 2.13.0 CPU wheel found on disk "
        "(find-links), one rep each; uv links its files from its cache.",
    ]
    lines += c.verdict_lines(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args, cfg, out_dir = c.command_line(__doc__, "envs.json and envs.md", FULL, QUICK, argv)
    t_start = time.perf_counter()
    meta = c.machine_info()
    meta["mode"] = "quick" if args.smoke else "full"
    uv = find_uv()
    if uv is None:
        log("uv is not installed: pip install 'corral[plugins]'")
        return 2
    results: dict[str, Any] = {"meta": meta, "config": cfg, "uv_version": subprocess.run(
        [uv, "--version"], capture_output=True, text=True).stdout.split()[1]}
    work = tempfile.mkdtemp(prefix="corral-bench-envs-")
    try:
        log("cold builds, msgspec")
        results["msgspec"] = cold_builds(os.path.join(work, "msgspec"), [], cfg["reps"],
                                         cfg["pip_reps"], with_empty_uv_cache=True)
        log("cached lookups")
        results["cached"] = cached(work, cfg["cached_reps"])
        if cfg["torch"]:
            log(f"cold builds, {TORCH}")
            results["torch"] = cold_builds(os.path.join(work, "torch"), [TORCH], 1, 1,
                                           with_empty_uv_cache=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["leftover_children"] = c.leftover_children(log)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_at_end"] = list(os.getloadavg())
    results["rows"] = table_rows(results)
    results["targets"] = {"cached_ensure_ms_max": TARGET_CACHED_MS,
                          "met": c.met(results["rows"])}
    c.write_results(out_dir, "envs", results, render_md(results))
    log(f"wrote {os.path.join(out_dir, 'envs.json')} and envs.md in {meta['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
