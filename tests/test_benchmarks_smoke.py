"""The benchmarks must keep running: each one's smoke mode runs every measurement with tiny
counts. No timing is asserted (CI machines are too noisy); only that it completes, stops
everything it started and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(tmp_path, name: str, title: str, timeout: float, flag: str = "--smoke") -> dict:
    """Runs benchmarks/bench_<name>.py in its smoke mode, writing to ``tmp_path``: it must
    exit 0, print its table and write <name>.md (starting with ``title``) and <name>.json,
    which is returned."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", f"bench_{name}.py"), flag,
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert (tmp_path / f"{name}.md").read_text().startswith(title)
    assert "| metric | corral | baseline | ratio | target | met? |" in proc.stdout
    return json.loads((tmp_path / f"{name}.json").read_text())


# section -> keys that must be positive numbers
POSITIVE = {
    "latency": ["pipe_p50_us", "pipe_p99_us", "corral_p50_us", "corral_p99_us", "ratio_p50",
                "ratio_p99"],
    "latency_runs": ["pipe_p50_us", "corral_p50_us", "ratio_p50"],
    "latency_vs_ppe": ["ppe_p50_us", "corral_p50_us", "ratio_p50"],
    "sequential": ["pipe_calls_per_s", "corral_calls_per_s", "ppe_calls_per_s",
                   "ratio_vs_pipe", "ratio_vs_ppe"],
    "pipelined": ["pipe_calls_per_s", "corral_calls_per_s", "ppe_calls_per_s",
                  "ratio_vs_pipe", "ratio_vs_ppe", "window"],
    "pipelined_submit": ["pipe_calls_per_s", "corral_calls_per_s", "ratio_vs_pipe"],
    "pipelined_gather": ["pipe_calls_per_s", "corral_calls_per_s", "ratio_vs_pipe"],
    "pipelined_async": ["pipe_calls_per_s", "corral_calls_per_s", "ratio_vs_pipe",
                        "corral_child_cpu_us_per_call", "pipe_child_cpu_us_per_call"],
    "cold_start": ["corral_ready_ms", "python_pass_ms", "corral_first_reply_ms",
                   "mp_spawn_first_reply_ms", "python_import_corral_worker_ms",
                   "ratio_vs_python_pass", "ratio_first_reply_vs_mp_spawn"],
    "rss": ["corral_idle_mib", "corral_stats_rss_mib", "bare_python_mib",
            "ratio_vs_bare_python"],
    "rss_running": ["pipe_child_mib", "ppe_child_mib", "corral_after_calls_mib"],
    "payload": ["request_bytes", "reply_bytes"],
}
# CPU time per call: non-negative (a coarse fallback clock may read 0 over a tiny run)
NON_NEGATIVE = [f"{sys_}_{side}_cpu_us_per_call" for sys_ in ("pipe", "ppe", "corral")
                for side in ("host", "child")]


@pytest.mark.timeout(180)
def test_bench_core_smoke(tmp_path):
    data = run_bench(tmp_path, "core", "# corral core benchmark", 170)

    meta = data["meta"]
    assert meta["mode"] == "smoke"
    assert meta["cpu_count"] >= 1 and meta["python"] and meta["date"]
    assert isinstance(meta["pinned"], bool)
    assert meta["wall_s"] > 0

    for section, keys in POSITIVE.items():
        for key in keys:
            value = data[section][key]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                (section, key, value)
            assert value > 0, (section, key, value)
    for kind in ("sequential", "pipelined"):
        for key in NON_NEGATIVE:
            assert data[kind][key] >= 0, (kind, key)

    assert set(data["targets"]["met"]) == {r["metric"] for r in data["rows"]
                                           if r["met"] is not None}
    assert len(data["targets"]["met"]) == 6
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    # Everything the benchmark started was stopped before it wrote its results.
    assert data["leftover_children"] == []


# section -> keys that must be positive numbers
VALUES_POSITIVE = {
    "big": ["memcpy_ms", "memcpy_to_memfd_ms", "host_sum_ms", "corral_sum_ms",
            "corral_sum_worker_run_ms", "corral_echo_ms", "pipe_sum_ms", "pipe_echo_ms",
            "memcpy_bytes_ms", "bytes_copy_ms", "corral_bytes_ms", "pipe_bytes_ms",
            "ratio_sum_vs_memcpy", "ratio_host_sum_vs_memcpy", "ratio_echo_vs_memcpy",
            "ratio_bytes_vs_memcpy", "ratio_sum_vs_pipe", "ratio_echo_vs_pipe",
            "ratio_bytes_vs_pipe", "size_bytes", "bytes_size_bytes"],
    "bytes_tuned": ["memcpy_bytes_ms", "bytes_copy_ms", "corral_bytes_ms",
                    "ratio_bytes_vs_memcpy"],
    "empty": ["plain_call_p50_ms"],
}


def _positive(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (where, value)
    assert value > 0, (where, value)


@pytest.mark.timeout(180)
def test_bench_values_smoke(tmp_path):
    """bench_values.py --smoke: every measurement at tiny sizes, no matplotlib needed."""
    data = run_bench(tmp_path, "values", "# corral values benchmark", 170)
    # The plot is optional: written when matplotlib imports, else a reason is recorded.
    assert (tmp_path / "values.png").exists() if data["plot"] is None else data["plot"]

    meta = data["meta"]
    assert meta["mode"] == "smoke" and meta["wall_s"] > 0 and meta["python"]

    for section, keys in VALUES_POSITIVE.items():
        for key in keys:
            _positive(data[section][key], (section, key))
    assert data["empty"]["sizes"]
    for row in data["empty"]["sizes"]:
        for key in ("size_bytes", "p50_ms", "memcpy_ms", "ratio_vs_memcpy"):
            _positive(row[key], ("empty", key))
    assert data["cold"]
    for name, res in data["cold"].items():
        for key in ("first_ms", "memcpy_ms", "first_ratio_vs_memcpy"):
            _positive(res[key], (name, key))
    assert data["scaling"]
    for row in data["scaling"]:
        for key in ("size_bytes", "corral_ms", "memcpy_ms", "ratio"):
            _positive(row[key], ("scaling", row["size_bytes"], key))
        if "pipe_ms" in row:
            _positive(row["pipe_ms"], ("scaling", row["size_bytes"], "pipe_ms"))
    assert set(data["rss"]) == {"corral", "corral_empty", "pipe"}
    for mode, res in data["rss"].items():
        for key in ("host_peak_above_baseline_x", "child_peak_above_baseline_x"):
            # (0 is real: an echoed corral.empty array comes back as a reference to the
            # host's own segment and costs the host no memory at all)
            assert isinstance(res[key], (int, float)) and res[key] >= 0, (mode, key, res[key])

    for row in data["rows"]:
        zero_ok = row["unit"] == "x size"  # peak memory above baseline may be nothing
        assert (row["corral"] >= 0 if zero_ok else row["corral"] > 0) and row["baseline"] > 0, row
    met = data["targets"]["met"]
    assert set(met) == {r["metric"] for r in data["rows"] if r["met"] is not None}
    assert len(met) == 5 + len(data["config"]["empty_sizes"])
    # Everything the benchmark started (and its child hosts started) was stopped.
    assert data["leftover_children"] == []


@pytest.mark.timeout(120)
def test_bench_supervision_smoke(tmp_path):
    """bench_supervision.py --smoke: crashes, restarts, cancels and throughput, 1-2 reps
    each."""
    data = run_bench(tmp_path, "supervision", "# corral supervision benchmark", 110)
    meta = data["meta"]
    assert meta["mode"] == "smoke" and meta["wall_s"] > 0 and meta["python"]

    crash = data["crash"]
    for key in ("kill_to_error_ms", "exit_to_error_ms", "kill_to_next_reply_ms",
                "exit_to_next_reply_ms", "cold_ready_ms", "cold_first_reply_ms", "noop_rtt_ms"):
        for q in ("p50", "p90"):
            _positive(crash[key][q], ("crash", key, q))
    assert crash["restarts"] >= 2  # one per SIGKILL and one per os._exit
    cancel = data["cancel"]
    for kind in ("async", "sync_spin_main", "sync_sleep_main", "sync_spin_slot_thread",
                 "stuck_in_c"):
        for key in ("next_reply_ms", "result_raises_us", "noop_rtt_ms"):
            _positive(cancel[kind][key]["p50"], (kind, key))
    assert cancel["stuck_in_c"]["restarts"] >= 1  # only a kill stops a call stuck in C
    assert cancel["first_async"]["reps"] >= 1
    pool = data["pool"]
    _positive(pool["burn_n"], "burn_n")
    for k in (1, 2):
        for what in ("burn", "noop"):
            _positive(pool[f"ppe{k}_{what}_per_s"], ("pool", k, what))
            _positive(pool[f"workers{k}_{what}_per_s"], ("workers", k, what))
    assert pool["pool"] is not None or pool["pool_note"]

    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    met = data["targets"]["met"]
    assert set(met) == {r["metric"] for r in data["rows"] if r["met"] is not None}
    # Everything the benchmark started (workers, restarts, pools) was stopped.
    assert data["leftover_children"] == []


@pytest.mark.timeout(90)
def test_bench_server_smoke(tmp_path):
    """bench_server.py --smoke: corral's server (sync, async 8 slots, Pool of 2, the file
    round trips), the bare Starlette floor and that route forwarding to a Pipe worker, tiny
    counts; never coglet (the full run compares with it when present)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    data = run_bench(tmp_path, "server", "# corral server benchmark", 80)
    assert data["meta"]["mode"] == "smoke" and data["coglet"] is None and data["coglet_note"]
    raw = data["raw"]
    assert set(raw) == {"bare", "corral_sync1", "corral_async8", "corral_pool2",
                        "corral_files_url", "corral_files_data", "interleaved",
                        "corral_instant", "bare_pipe"}
    instant = raw.pop("corral_instant")["concurrent"]  # the server alone, no worker
    _positive(instant["ok_per_s"], "instant")
    assert instant["409"] == instant["429"] == instant["other"] == instant["errors"] == 0
    inter = raw.pop("interleaved")  # corral and the floor side by side, alternating rounds
    assert set(inter["p50_us_rounds"]) == {"corral_sync1", "bare", "bare_pipe"}
    for name, rounds in inter["p50_us_rounds"].items():
        assert len(rounds) == 2 and all(x > 0 for x in rounds), (name, rounds)
    assert inter["failed"] == {"corral_sync1": 0, "bare": 0, "bare_pipe": 0}
    for name in ("corral_files_url", "corral_files_data"):  # the file round trips
        _positive(raw.pop(name)["file"]["median_ms"], name)
    for name in raw:
        seq = raw[name]["sequential"]
        for key in ("p50_us", "p90_us", "pred_per_s"):
            _positive(seq[key], (name, key))
        assert seq["failed"] == 0, name
    for name in ("bare", "bare_pipe", "corral_async8", "corral_pool2"):
        conc = raw[name]["concurrent"]
        _positive(conc["ok_per_s"], (name, "ok_per_s"))
        assert conc["409"] == conc["429"] == conc["other"] == conc["errors"] == 0, (name, conc)
        _positive(conc["server_cpu_us_per_answer"], (name, "server CPU"))
    _positive(instant["server_cpu_us_per_answer"], "instant server CPU")
    _positive(raw["corral_sync1"]["big"]["median_ms"], "big")
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    assert data["targets"]["met"] == {}  # no coglet: no target judged
    assert data["leftover_children"] == []


@pytest.mark.timeout(120)
def test_bench_logs_smoke(tmp_path):
    """bench_logs.py --smoke: 2,000 printed lines through a bare Worker, corral serve and
    corral serve with a logs webhook, one round each."""
    pytest.importorskip("uvicorn")
    data = run_bench(tmp_path, "logs", "# corral logs benchmark", 110)
    assert data["meta"]["mode"] == "smoke" and data["config"]["lines"] == 2000
    for name in ("bare_worker", "serve_sync", "serve_webhook"):
        part = data[name]
        _positive(part["seconds"], (name, "seconds"))
        _positive(part["peak"], (name, "peak"))
        assert len(part["rounds"]) == 1
    assert data["bare_worker"]["lines_kept"] == 2000  # (under the cap: nothing dropped)
    assert data["serve_sync"]["health_checks"] >= 1
    assert data["serve_webhook"]["webhook_posts"] >= 2  # start and completed at least
    assert data["serve_webhook"]["logs_chars"] == data["serve_sync"]["logs_chars"] > 0
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    assert data["leftover_children"] == []


@pytest.mark.timeout(90)
def test_bench_plugins_smoke(tmp_path):
    """bench_plugins.py --quick: load to ready and per-call overhead through the plugin
    manager against a bare Worker, tiny counts."""
    data = run_bench(tmp_path, "plugins", "# corral plugins benchmark", 80, flag="--quick")
    assert data["meta"]["mode"] == "quick"
    for key in ("manager_ms", "worker_ms", "ratio"):
        _positive(data["load"][key], ("load", key))
    for key in ("worker_us", "manager_us", "handle_us", "manager_ratio", "handle_ratio"):
        _positive(data["call"][key], ("call", key))
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    assert len(data["targets"]["met"]) == 2


@pytest.mark.timeout(150)
def test_bench_envs_quick(tmp_path):
    """bench_envs.py --quick: one cold build of each kind (uv, uv with an empty cache, pip,
    venv by hand) and the cached lookups; never the torch rows."""
    data = run_bench(tmp_path, "envs", "# corral environments benchmark", 140, flag="--quick")
    assert data["meta"]["mode"] == "quick" and data["meta"]["wall_s"] > 0
    assert set(data["msgspec"]) == {"venv_bare", "venv_pip", "corral_uv", "corral_pip",
                                    "corral_uv_empty_cache"}
    for name, res in data["msgspec"].items():
        _positive(res["ms"], name)
    for key in ("cold_ms", "ensure_ms", "get_ms"):
        _positive(data["cached"][key], key)
    assert "torch" not in data
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    assert set(data["targets"]["met"]) == {r["metric"] for r in data["rows"]
                                           if r["met"] is not None}
    assert data["leftover_children"] == []


def test_cog_side_by_side_smoke(tmp_path):
    """The coglet comparison still runs (corral's side only: CI has no coglet)."""
    pytest.importorskip("uv")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cog_side_by_side.py"),
                           "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = json.loads((tmp_path / "cog_side_by_side.json").read_text())["rows"]
    assert rows and all(r["corral"].startswith(("200", "422")) for r in rows)
    assert "| predictor | request | coglet | corral | same? |" in proc.stdout


@pytest.mark.timeout(90)
def test_bench_children_smoke(tmp_path):
    """bench_children.py --smoke: cold start, stop and no-op latency with and without the
    keeper, and the keeper's memory."""
    data = run_bench(tmp_path, "children", "# corral keeper benchmark", 80)
    assert data["meta"]["mode"] == "smoke"
    for key in ("keeper_ms", "bare_ms", "keeper_stop_ms", "bare_stop_ms", "ratio",
                "stop_ratio"):
        _positive(data["cold_start"][key], ("cold_start", key))
    for key in ("keeper_p50_us", "bare_p50_us", "ratio"):
        _positive(data["latency"][key], ("latency", key))
    for key in ("keeper_rss_mib", "keeper_private_mib", "worker_rss_mib",
                "worker_private_mib", "forked_keeper_rss_mib", "forked_keeper_private_mib"):
        _positive(data["memory"][key], ("memory", key))
    for row in data["rows"]:
        assert row["corral"] > 0 and row["baseline"] > 0, row
    assert len(data["targets"]["met"]) == 3
    assert data["leftover_children"] == []


@pytest.mark.timeout(180)
def test_bench_pie_smoke(tmp_path):
    data = run_bench(tmp_path, "pie", "# corral PIE benchmark", 170)
    co = data["corral"]
    assert co["launch"]["bad"] == 0 and co["launch"]["median_ms"] > 0
    assert co["transfer"]["ok"] and co["lines"]["in_order"]
    assert co["signal"]["terminal"] == "return" and co["ping"]["median_ms"] > 0
    assert [r["metric"].split(",")[0] for r in data["rows"]][:2] == ["ping", "launch -> return"]
def test_bench_remote_smoke(tmp_path):
    """bench_remote.py --smoke: corral host + corral.connect against a bare websockets echo
    and a local Worker (no-op), a big array both ways, a bundle upload; tiny sizes."""
    pytest.importorskip("websockets")
    data = run_bench(tmp_path, "remote", "# corral remote benchmark", 170)
    assert data["meta"]["mode"] == "smoke"
    raw = data["raw"]
    for name in ("remote", "local", "echo", "ping"):
        _positive(raw["latency"]["p50_us"][name], name)
    for key in ("corral_ms", "raw_ms", "ratio"):
        _positive(raw["big_array"][key], ("big_array", key))
        _positive(raw["bundle"][key], ("bundle", key))
    assert data["leftover_children"] == []


@pytest.mark.timeout(180)
def test_bench_streams_smoke(tmp_path):
    """bench_streams.py --smoke: 3-stage forward vs 3 calls, a big intermediate in one worker
    vs through the host, streamed chunks/s vs a Pipe loop, host RSS with a slow reader."""
    data = run_bench(tmp_path, "streams", "# corral streams and pipelines benchmark", 170)
    assert data["meta"]["mode"] == "smoke"
    for label in ("small", "1mb"):
        for key in ("pipeline_us", "three_calls_us", "ratio"):
            _positive(data["forward"][label][key], ("forward", label, key))
    for key in ("one_worker_ms", "handed_over_ms", "through_host_ms", "ratio",
                "ratio_one_worker"):
        _positive(data["big_intermediate"][key], ("big_intermediate", key))
    for label in ("1kib", "1mib"):
        for key in ("corral_chunks_per_s", "pipe_chunks_per_s", "ratio"):
            _positive(data["chunks"][label][key], ("chunks", label, key))
    slow = data["slow_reader"]
    assert slow["window_8"]["peak_growth_mib"] >= 0
    assert slow["unbounded"]["peak_growth_mib"] >= 0
    for key in ("pipeline_us", "three_calls_us", "ratio"):
        _positive(data["forward_keep_heap"]["1mb"][key], ("forward_keep_heap", key))
    assert len(data["rows"]) == 8
    assert data["leftover_children"] == []


@pytest.mark.timeout(180)
def test_bench_ray_smoke(tmp_path):
    """bench_ray.py --smoke: a corral Ray worker against a bare Ray actor on a local
    cluster (no-op, a big array), pool throughput on 1 and 2 nodes; tiny sizes."""
    data = run_bench(tmp_path, "ray", "# corral Ray benchmark", 170)
    assert data["meta"]["mode"] == "smoke"
    raw = data["raw"]
    for name in ("bare", "corral"):
        _positive(raw["latency"]["p50_us"][name], ("latency", name))
    for key in ("corral", "bare", "copy", "corral_rt", "bare_rt"):
        _positive(raw["big_array"]["ms"][key], ("big_array", key))
    for label in ("1 node", "2 nodes"):
        for kind in ("noop", "wait"):
            for key in ("corral_per_s", "bare_per_s", "ratio"):
                _positive(raw["throughput"][label][kind][key], (label, kind, key))
    assert data["leftover_children"] == []
