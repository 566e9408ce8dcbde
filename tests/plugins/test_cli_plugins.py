"""``corral plugins ...`` run for real in a subprocess."""

import json
import os
import subprocess
import sys

from conftest import HERE
from plugins.manager_helpers import make_plugin

SRC = os.path.join(os.path.dirname(HERE), "src")


def corral(*args, timeout=60, home=None):
    env = dict(os.environ)
    if home is not None:  # where environments are built (CORRAL_HOME/envs)
        env["CORRAL_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([SRC, HERE] + ([env["PYTHONPATH"]]
                                                       if env.get("PYTHONPATH") else []))
    env["CORRAL_PLUGINS_DIR"] = "/nonexistent/corral-plugins"
    return subprocess.run([sys.executable, "-m", "corral", "plugins", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_list_shows_a_table_and_json_rows(tmp_path):
    make_plugin(tmp_path, "tool", manifest='[resources]\nmemory = "2GiB"\n')
    r = corral("list", "-p", str(tmp_path), "--no-entry-points")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert header.split()[:4] == ["name", "version", "environment", "memory"]
    assert row.split()[:4] == ["tool", "1.0", "none", "2.0"]
    r = corral("list", "--json", "-p", str(tmp_path), "--no-entry-points")
    [row] = json.loads(r.stdout)
    assert row["name"] == "tool" and row["resources"]["memory"] == 2**31
    assert row["loaded"] is False and row["environment"] == "none"


def test_list_warns_about_broken_manifests_on_stderr(tmp_path):
    make_plugin(tmp_path, "tool")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "corral.toml").write_text('name = "broken"\nbogus = 1\n')
    r = corral("list", "--plugins-dir", str(tmp_path), "--no-entry-points")
    assert r.returncode == 0, r.stderr
    assert "tool" in r.stdout and "broken" not in r.stdout
    assert "warning:" in r.stderr and "bogus: unknown key" in r.stderr


def test_call_loads_the_plugin_with_its_config_and_prints_the_result(tmp_path):
    make_plugin(tmp_path, "tool")
    r = corral("call", "tool", "describe", "-c", "size=3", "-c", "label=cli", "-p",
               str(tmp_path), "--json", "--no-entry-points")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["size"], out["label"]) == (3, "cli")
    r = corral("call", "tool", "count", "-i", "n=3", "-c", "size=1", "-p", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "1", "2"]


def test_call_lists_every_config_problem_with_exit_status_2(tmp_path):
    make_plugin(tmp_path, "tool")
    r = corral("call", "tool", "describe", "-c", "ratio=fast", "-c", "colour=red", "-p",
               str(tmp_path))
    assert r.returncode == 2
    assert "bad config for plugin tool:" in r.stderr
    for line in ("colour: unexpected config key", "size: required config key is missing",
                 "ratio: Expected `float`, got `str`"):
        assert line in r.stderr


def test_bad_inputs_an_unknown_plugin_and_install_without_requirements(tmp_path):
    make_plugin(tmp_path, "tool")
    r = corral("call", "tool", "count", "-i", "n=many", "-c", "size=1", "-p", str(tmp_path))
    assert r.returncode == 2 and "n: Expected `int`, got `str`" in r.stderr
    r = corral("call", "nope", "-p", str(tmp_path))
    assert r.returncode == 2 and "no plugin named 'nope' (found: tool" in r.stderr
    r = corral("install", "tool", "-p", str(tmp_path))
    assert r.returncode == 0 and "nothing to install" in r.stdout
    r = corral("uninstall", "tool", "-p", str(tmp_path))
    assert r.returncode == 0 and "no environment of its own" in r.stdout


def test_install_builds_a_real_environment_and_uninstall_removes_it(tmp_path):
    make_plugin(tmp_path / "plugins", "tool", manifest='requirements = ["msgspec"]\n')
    home = tmp_path / "home"
    r = corral("install", "tool", "-p", str(tmp_path / "plugins"), home=home, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tool: environment ready at" in r.stdout
    [env_dir] = [d for d in (home / "envs").iterdir() if not d.name.startswith(".")]
    assert (env_dir / "corral-env.json").exists()
    r = corral("list", "--json", "-p", str(tmp_path / "plugins"), "--no-entry-points", home=home)
    [row] = json.loads(r.stdout)
    assert row["environment"] == "ready"
    r = corral("call", "tool", "describe", "-c", "size=2", "-p", str(tmp_path / "plugins"),
               "--json", home=home, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["size"] == 2
    r = corral("uninstall", "tool", "-p", str(tmp_path / "plugins"), home=home)
    assert r.returncode == 0, r.stderr
    assert not env_dir.exists()


def test_a_failed_install_prints_the_installers_message_and_leaves_nothing(tmp_path):
    make_plugin(tmp_path / "plugins", "tool",
                manifest='requirements = ["corral-no-such-package-anywhere==9.9"]\n')
    home = tmp_path / "home"
    r = corral("install", "tool", "-p", str(tmp_path / "plugins"), home=home, timeout=300)
    assert r.returncode == 1
    assert "corral-no-such-package-anywhere" in r.stderr
    # uv's own words reach the user (not just "it failed")
    assert "not found" in r.stderr.lower() or "no solution" in r.stderr.lower(), r.stderr
    envs = home / "envs"
    left = [d.name for d in envs.iterdir() if not d.name.startswith(".")] if envs.exists() else []
    assert left == []


def test_help_everywhere():
    for args in ([], ["list"], ["install"], ["uninstall"], ["call"]):
        r = corral(*args, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, args


def test_uninstall_from_another_process_refuses_while_a_host_has_the_plugin_loaded(tmp_path):
    from corral.plugins.envs import EnvironmentCache
    from corral.plugins.manager import PluginManager

    make_plugin(tmp_path / "plugins", "tool", manifest='requirements = ["msgspec"]\n')
    home = tmp_path / "home"
    with PluginManager([tmp_path / "plugins"], entry_points=False,
                       environments=EnvironmentCache(home / "envs")) as pm:
        pm.load("tool", {"size": 1})
        r = corral("uninstall", "tool", "-p", str(tmp_path / "plugins"), home=home)
        assert r.returncode == 1 and "is in use" in r.stderr, (r.stdout, r.stderr)
        assert pm.call("tool", "echo", 7) == 7  # its environment is still there
        pm.unload("tool")
        r = corral("uninstall", "tool", "-p", str(tmp_path / "plugins"), home=home)
        assert r.returncode == 0, r.stderr
    assert EnvironmentCache(home / "envs").list() == []
