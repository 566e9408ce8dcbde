"""PluginManager with real worker processes: load, call, stream, reload, unload, config
errors, environments (through a stand-in of the env layer), eviction, threads, host death."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

from conftest import HERE, wait_until
from corral.plugins.errors import (
    ConfigError,
    EnvironmentBuildError,
    InsufficientResources,
    PluginBusy,
    PluginNotFound,
    PluginNotLoaded,
)
from corral.plugins.manager import PluginManager
from corral.plugins.resources import ResourceMonitor, Usage
from plugins.manager_helpers import HostEnvironments, make_plugin

MiB = 2**20


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def plugins(tmp_path):
    make_plugin(tmp_path / "plugins", "tool")
    return tmp_path / "plugins"


def manager(folder, **kw):
    return PluginManager([str(folder)], plugins_dir=str(folder / "no-such-dir"),
                         entry_points=False, **kw)


def test_load_call_stream_and_unload_ends_the_process(plugins):
    with manager(plugins) as pm:
        handle = pm.load("tool", {"size": 3})
        pid = handle.pid
        assert psutil.Process(pid).is_running()
        assert pm.call("tool", "echo", [1, "x"]) == [1, "x"]
        assert list(pm.stream("tool", "count", 4)) == [0, 1, 2, 3]
        assert handle.call("describe")["size"] == 3
        assert pm.unload("tool") is True
        assert gone(pid)
        assert pm.unload("tool") is False
        with pytest.raises(PluginNotLoaded, match="it was unloaded"):
            pm.call("tool", "echo", 1)
        with pytest.raises(PluginNotLoaded):
            handle.call("echo", 1)


def test_list_shows_each_plugin_and_what_a_loaded_one_runs(plugins):
    make_plugin(plugins, "heavy", manifest='[resources]\nmemory = "1GiB"\ngpus = 0\n')
    with manager(plugins) as pm:
        rows = {r.name: r for r in pm.list()}
        assert set(rows) == {"heavy", "tool"}
        assert not rows["tool"].loaded and rows["tool"].pid is None
        assert rows["tool"].environment == "none" and rows["tool"].version == "1.0"
        assert rows["heavy"].resources.memory == 2**30
        pid = pm.load("tool", {"size": 1}).pid
        row = {r.name: r for r in pm.list()}["tool"]
        assert row.loaded and row.pid == pid and row.memory > MiB
        assert row.methods == ["count", "describe", "echo", "get_state", "wait"]
        assert row.streams == ["count"] and row.config == {"size": 1}


def test_a_bad_config_lists_every_problem_and_leaves_nothing_running(plugins):
    with manager(plugins) as pm:
        with pytest.raises(ConfigError) as info:
            pm.load("tool", {"label": 5, "ratio": "fast", "colour": "red"})
        err = info.value
        assert err.plugin == "tool"
        assert {tuple(p["loc"]): p["msg"] for p in err.problems} == {
            ("colour",): "unexpected config key",
            ("size",): "required config key is missing",
            ("label",): "Expected `str`, got `int`",
            ("ratio",): "Expected `float`, got `str`",
        }
        assert pm.loaded() == [] and not psutil.Process().children()
        with pytest.raises(ConfigError, match="must be a dict"):
            pm.load("tool", ["size", 3])
        with pytest.raises(PluginNotFound, match="no plugin named 'nope'"):
            pm.load("nope")


def test_reload_changes_the_config_in_the_same_process(plugins):
    with manager(plugins) as pm:
        handle = pm.load("tool", {"size": 1})
        pid = handle.pid
        pm.reload("tool", {"size": 2, "label": "new"})
        state = handle.call("describe")
        assert (state["size"], state["label"], state["pid"]) == (2, "new", pid)
        # A config that does not fit is refused before teardown: the plugin runs on as it was.
        with pytest.raises(ConfigError, match="size: Expected `int`"):
            pm.reload("tool", {"size": "two"})
        assert handle.call("describe")["label"] == "new"
        assert pm.get_state("tool")["config"] == {"size": 2, "label": "new"}
        # fresh=True: a new process, and the old one is gone.
        pm.reload("tool", {"size": 3}, fresh=True)
        assert handle.pid != pid and gone(pid)
        assert handle.call("describe")["size"] == 3


def test_reload_after_the_manifest_changed_starts_a_new_process(plugins):
    with manager(plugins) as pm:
        handle = pm.load("tool", {"size": 1})
        pid = handle.pid
        with open(plugins / "tool" / "corral.toml", "a") as f:
            f.write('env = { TOOL_ENV = "changed" }\n')
        pm.reload("tool", {"size": 1})
        assert handle.pid != pid and gone(pid)
        assert handle.call("describe")["env"] == "changed"


def test_get_state_reports_the_worker_and_the_targets_own_state(plugins):
    with manager(plugins) as pm:
        pm.load("tool", {"size": 1, "label": "L"})
        state = pm.get_state("tool")
        assert state["target"] == {"label": "L"}
        assert state["health"]["status"] == "ready" and state["pid"] == state["health"]["pid"]
        assert state["memory"] > MiB and state["stats"]["slots"] == 1
        assert state["python"] is None  # no requirements: the host's interpreter


def test_loading_again_with_the_same_config_gives_the_same_plugin(plugins):
    with manager(plugins) as pm:
        pid = pm.load("tool", {"size": 1}).pid
        assert pm.load("tool", {"size": 1}).pid == pid
        with pytest.raises(PluginBusy, match="reload"):
            pm.load("tool", {"size": 2})


def test_close_unloads_everything(plugins):
    make_plugin(plugins, "second")
    pm = manager(plugins)
    pids = [pm.load("tool", {"size": 1}).pid, pm.load("second", {"size": 2}).pid]
    pm.close()
    assert all(gone(pid) for pid in pids) and pm.loaded() == []
    with pytest.raises(Exception, match="closed"):
        pm.load("tool", {"size": 1})


def test_calls_and_loads_from_many_threads(plugins):
    for name in ("t1", "t2", "t3"):
        make_plugin(plugins, name)
    errors = []
    with manager(plugins) as pm:
        def work(name, k):
            try:
                handle = pm.load(name, {"size": 7})
                for i in range(30):
                    assert pm.call(name, "echo", (k, i)) == (k, i)
                assert handle.call("describe")["size"] == 7
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(name, k))
                   for k, name in enumerate(["t1", "t2", "t3", "t1", "t2", "t3"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert pm.loaded() == ["t1", "t2", "t3"]
        assert len(psutil.Process().children()) == 3  # one worker each, however many loads


# -- resources -------------------------------------------------------------------------------


def budget(memory):
    """A fixed budget of free memory; loaded plugins count by what they declared."""
    return ResourceMonitor(memory_available=lambda: memory, gpus=lambda: [],
                           usage=lambda pid: Usage())


@pytest.fixture
def sized(tmp_path):
    for name in ("a", "b", "c"):
        make_plugin(tmp_path / "plugins", name, manifest='[resources]\nmemory = "400MiB"\n')
    make_plugin(tmp_path / "plugins", "gpu", manifest="[resources]\ngpus = 1\n")
    return tmp_path / "plugins"


def test_a_plugin_that_does_not_fit_is_refused_with_what_is_held(sized):
    with manager(sized, resources=budget(1000 * MiB)) as pm:
        pm.load("a", {"size": 1})
        pm.load("b", {"size": 1})
        with pytest.raises(InsufficientResources) as info:
            pm.load("c", {"size": 1})
        text = str(info.value)
        assert "400.0 MiB of memory, 200.0 MiB is free" in text
        assert "a holds 400.0 MiB" in text and "b holds 400.0 MiB" in text
        assert pm.loaded() == ["a", "b"]
        pm.unload("a")
        pm.load("c", {"size": 1})  # a's share is free again


def test_lru_eviction_unloads_the_least_recently_used_idle_plugin(sized):
    with manager(sized, resources=budget(1000 * MiB)) as pm:
        pid_a = pm.load("a", {"size": 1}).pid
        pid_b = pm.load("b", {"size": 1}).pid
        pm.call("a", "echo", 1)  # b is now the least recently used
        pm.load("c", {"size": 1}, evict="lru")
        assert pm.loaded() == ["a", "c"] and gone(pid_b) and not gone(pid_a)
        with pytest.raises(PluginNotLoaded, match="evicted .* to make room for 'c'"):
            pm.call("b", "echo", 1)


def test_a_bad_config_costs_no_plugin_its_place(sized):
    with manager(sized, resources=budget(1000 * MiB), evict="lru") as pm:
        pids = [pm.load("a", {"size": 1}).pid, pm.load("b", {"size": 1}).pid]
        with pytest.raises(ConfigError) as info:
            pm.load("c", {"size": "many", "colour": "red"})  # would need an eviction
        assert {tuple(p["loc"]) for p in info.value.problems} == {("size",), ("colour",)}
        assert pm.loaded() == ["a", "b"] and not any(gone(pid) for pid in pids)
        pm.load("c", {"size": 1})  # a good config still evicts as before
        assert pm.loaded() == ["b", "c"] and gone(pids[0])  # a: the least recently used


def test_lru_eviction_skips_a_busy_plugin(sized):
    with manager(sized, resources=budget(1000 * MiB), evict="lru") as pm:
        pm.load("a", {"size": 1})
        pm.load("b", {"size": 1})
        pm.call("b", "echo", 1)  # a is the least recently used, but it will be busy
        busy = pm.handle("a").worker.submit("wait", 1.0)
        wait_until(lambda: pm.handle("a").worker.health().busy == 1, what="a busy")
        pm.load("c", {"size": 1})
        assert pm.loaded() == ["a", "c"]
        assert busy.result(10) == 1.0


def test_a_gpu_plugin_is_refused_on_a_machine_without_one(sized):
    with manager(sized, resources=budget(1000 * MiB)) as pm:
        with pytest.raises(InsufficientResources, match="needs 1 GPU.*no GPU was found"):
            pm.load("gpu", {"size": 1})
        assert pm.loaded() == []


# -- environments ----------------------------------------------------------------------------


@pytest.fixture
def envs(tmp_path):
    root = tmp_path / "envs"
    root.mkdir()
    return HostEnvironments(root)


def test_install_builds_the_environment_and_load_runs_on_its_interpreter(plugins, envs):
    make_plugin(plugins, "needs", manifest='requirements = ["numpy>=1"]\n')
    make_plugin(plugins, "twin", manifest='requirements = ["numpy>=1"]\n')
    with manager(plugins, environments=envs) as pm:
        states = {r.name: r.environment for r in pm.list()}
        assert states == {"needs": "missing", "tool": "none", "twin": "missing"}
        lines = []
        env = pm.install("needs", progress=lines.append)
        assert lines == ["resolving 1 requirement(s)", "installed"]
        assert pm.environment_state("needs") == pm.environment_state("twin") == "ready"
        assert pm.install("tool") is None  # nothing to build
        handle = pm.load("needs", {"size": 1})
        assert handle.call("describe")["test_env"] == env.key
        assert pm.get_state("needs")["python"] == env.python
        assert envs.built == [("numpy>=1",)]  # built once, used by both
        with pytest.raises(PluginBusy, match="unload it before"):
            pm.uninstall("needs")
        pm.unload("needs")
        assert pm.uninstall("needs") is False  # twin shares it: it stays
        assert pm.environment_state("needs") == "ready"
        os.remove(plugins / "twin" / "corral.toml")
        assert pm.uninstall("needs") is True
        assert pm.environment_state("needs") == "missing"


def test_load_builds_a_missing_environment_first(plugins, envs):
    make_plugin(plugins, "needs", manifest='requirements = ["msgspec"]\n')
    with manager(plugins, environments=envs) as pm:
        assert pm.load("needs", {"size": 1}).call("describe")["test_env"] == "env-msgspec"


def test_a_failed_build_is_reported_and_shown_as_failed(plugins, envs):
    make_plugin(plugins, "broken", manifest='requirements = ["no-such-package==1"]\n')
    with manager(plugins, environments=envs) as pm:
        with pytest.raises(EnvironmentBuildError, match="No matching distribution"):
            pm.install("broken")
        assert pm.environment_state("broken") == "failed"
        row = {r.name: r for r in pm.list()}["broken"]
        assert row.environment == "failed" and "building the environment failed" in row.detail
        with pytest.raises(EnvironmentBuildError):
            pm.load("broken")
        assert pm.loaded() == []


def test_the_state_is_building_while_the_environment_builds(plugins, envs):
    make_plugin(plugins, "needs", manifest='requirements = ["msgspec"]\n')
    envs.gate = threading.Event()
    with manager(plugins, environments=envs) as pm:
        t = threading.Thread(target=pm.install, args=("needs",))
        t.start()
        wait_until(lambda: pm.environment_state("needs") == "building", what="building")
        envs.gate.set()
        t.join(10)
        assert pm.environment_state("needs") == "ready"


# -- host death ------------------------------------------------------------------------------


def test_a_killed_host_leaves_no_plugin_worker(plugins):
    host = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        from corral.plugins.manager import PluginManager
        pm = PluginManager([{str(plugins)!r}], plugins_dir="/nonexistent", entry_points=False)
        print(pm.load("tool", {{"size": 1}}).pid, flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", host], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert not gone(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: gone(pid), timeout=5, what="the plugin worker to end")
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def test_a_load_that_fails_before_its_worker_starts_gives_its_reservation_back(sized):
    # Worker() itself refuses the options: the plugin never loaded, so the 400 MiB it
    # reserved must not stay held against every later load.
    with manager(sized, resources=budget(1000 * MiB), timeout=-1) as pm:
        with pytest.raises(ValueError, match="timeout"):
            pm.load("a", {"size": 1})
        pm.worker_options = {}
        pm.load("b", {"size": 1})
        pm.load("c", {"size": 1})  # fits only if a holds nothing
        assert pm.loaded() == ["b", "c"]
