"""Discovery: plugin folders, folders of them, the plugins dir, and entry points of
installed distributions (a real .dist-info on sys.path)."""

import os
import textwrap

import pytest

from corral.plugins.discovery import ENTRY_POINT_GROUP, default_plugins_dir, discover
from corral.plugins.manager import PluginManager
from plugins.manager_helpers import make_plugin


def test_a_path_may_be_a_plugin_folder_or_a_folder_of_them(tmp_path):
    single = make_plugin(tmp_path / "single", "alpha")
    make_plugin(tmp_path / "many", "beta")
    make_plugin(tmp_path / "many", "gamma")
    (tmp_path / "many" / "not-a-plugin").mkdir()
    found = discover([single, str(tmp_path / "many")], plugins_dir=str(tmp_path / "none"),
                     entry_points=False)
    assert sorted(found.plugins) == ["alpha", "beta", "gamma"]
    assert found.problems == []
    alpha = found.plugins["alpha"]
    assert alpha.folder == single and alpha.source == os.path.join(single, "corral.toml")
    # A file target is made absolute against the plugin's folder.
    assert alpha.target == os.path.join(single, "tool.py") + ":Tool"


def test_the_plugins_dir_comes_after_the_paths_and_a_shadowed_plugin_is_reported(tmp_path):
    first = make_plugin(tmp_path / "paths", "same")
    make_plugin(tmp_path / "dir", "same")
    make_plugin(tmp_path / "dir", "other")
    found = discover([str(tmp_path / "paths")], plugins_dir=str(tmp_path / "dir"),
                     entry_points=False)
    assert sorted(found.plugins) == ["other", "same"]
    assert found.plugins["same"].folder == first
    [problem] = found.problems
    assert "also at" in str(problem) and str(tmp_path / "dir" / "same") in problem.source


def test_a_broken_manifest_is_reported_without_hiding_the_others(tmp_path):
    make_plugin(tmp_path, "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "corral.toml").write_text('name = "broken"\n')  # no target
    found = discover([str(tmp_path), str(tmp_path / "missing")],
                     plugins_dir=str(tmp_path / "none"), entry_points=False)
    assert list(found.plugins) == ["good"]
    messages = [str(p) for p in found.problems]
    assert any("target: required key is missing" in m for m in messages)
    assert any("no such directory" in m for m in messages)


def test_the_default_plugins_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_PLUGINS_DIR", str(tmp_path / "mine"))
    assert default_plugins_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("CORRAL_PLUGINS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_plugins_dir() == str(tmp_path / "xdg" / "corral" / "plugins")


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A distribution "demo-plugins 1.4" installed into a directory on sys.path, with
    three entry points: a package holding a manifest, a target, and a mismatched name."""
    site = tmp_path / "site"
    pkg = site / "demo_pkg"
    pkg.mkdir(parents=True)
    # Discovery must find the manifest without importing the package.
    (pkg / "__init__.py").write_text("raise RuntimeError('demo_pkg was imported')\n")
    (pkg / "corral.toml").write_text('name = "folderish"\ntarget = "model.py:Model"\n')
    (pkg / "model.py").write_text(textwrap.dedent('''
        class Model:
            def setup(self, greeting: str = "hi"):
                self.greeting = greeting

            def predict(self, name: str) -> str:
                return f"{self.greeting} {name}"
    '''))
    (site / "demo_direct.py").write_text(textwrap.dedent('''
        class Direct:
            def predict(self, x: int) -> int:
                return x * 2
    '''))
    info = site / "demo_plugins-1.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugins\nVersion: 1.4\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nfolderish = demo_pkg\ndirect = demo_direct:Direct\n"
        "misnamed = demo_pkg\nmissing = no_such_pkg_here\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_points_name_a_manifest_folder_or_a_target(installed, tmp_path):
    found = discover([], plugins_dir=str(tmp_path / "none"))
    folderish, direct = found.plugins["folderish"], found.plugins["direct"]
    assert folderish.folder == str(installed / "demo_pkg")
    assert folderish.version == "1.4"  # the distribution's: the manifest has none
    assert "entry point folderish" in folderish.source
    assert direct.folder is None and direct.target == "demo_direct:Direct"
    assert direct.version == "1.4" and direct.requirements() == []
    messages = " | ".join(str(p) for p in found.problems)
    assert "'folderish' but the entry point is 'misnamed'" in messages
    assert "no package directory 'no_such_pkg_here'" in messages
    assert "misnamed" not in found.plugins and "missing" not in found.plugins


def test_entry_point_plugins_load_and_run_in_their_own_workers(installed, tmp_path):
    with PluginManager([], plugins_dir=str(tmp_path / "none")) as pm:
        assert pm.load("folderish", {"greeting": "hello"}).predict(name="Ada") == "hello Ada"
        # The target form imports its module from where the distribution is installed.
        assert pm.load("direct").predict(x=21) == 42
        assert sorted(pm.loaded()) == ["direct", "folderish"]


def test_entry_points_can_be_left_out(installed, tmp_path):
    found = discover([], plugins_dir=str(tmp_path / "none"), entry_points=False)
    assert "direct" not in found.plugins


def test_an_unreadable_or_odd_toml_file_is_a_problem_not_a_crash(tmp_path):
    # A folder of plugins holds what users put there: a pyproject.toml whose `tool` is not
    # a table, a manifest that is not UTF-8. A corral.toml is a plugin's, so its problem is
    # reported; a pyproject.toml that cannot be read is some other project's and ignored
    # (as one with a TOML syntax error is). Either way the others still load.
    make_plugin(tmp_path, "good")
    (tmp_path / "odd-tool").mkdir()
    (tmp_path / "odd-tool" / "pyproject.toml").write_text("tool = 1\n")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "corral.toml").write_bytes(b'name = "caf\xe9"\ntarget = "t.py:T"\n')
    (tmp_path / "latin1-pyproject").mkdir()
    (tmp_path / "latin1-pyproject" / "pyproject.toml").write_bytes(
        b'[tool.corral]\nname = "caf\xe9"\n')
    found = discover([str(tmp_path)], plugins_dir=str(tmp_path / "none"), entry_points=False)
    assert list(found.plugins) == ["good"]
    [problem] = found.problems
    assert problem.source == str(tmp_path / "latin1" / "corral.toml")
    assert "not valid TOML: not UTF-8" in str(problem)


def test_inline_requirement_paths_are_relative_to_the_plugin_folder(tmp_path, monkeypatch):
    # As a requirements file's are: the host's current folder must not decide which wheel
    # a plugin gets (nor split one plugin's environment into one per folder it is run from).
    folder = make_plugin(tmp_path / "plugins", "local",
                         manifest='requirements = ["./wheels/dep-1.0-py3-none-any.whl", '
                                  '"--find-links wheels", "Numpy>=1"]\n')
    wheels = os.path.join(folder, "wheels")
    expected = [f"--find-links {wheels}", os.path.join(wheels, "dep-1.0-py3-none-any.whl"),
                "numpy>=1"]
    for cwd in (tmp_path, tmp_path / "plugins"):
        monkeypatch.chdir(cwd)
        found = discover([str(tmp_path / "plugins")], plugins_dir=str(tmp_path / "none"),
                         entry_points=False)
        assert sorted(found.plugins["local"].requirements()) == sorted(expected)
