"""A manifest cannot reach outside its plugin folder or smuggle lines and NULs (issue 12,
item 8): requirements files and file targets stay inside the folder, an error never quotes
a file outside it, one requirement string is one line, env values hold no NUL."""

import os

import pytest

from corral.plugins.discovery import Plugin
from corral.plugins.errors import ManifestError, RequirementsError
from corral.plugins.manifest import read_manifest
from corral.plugins.requirements import normalize_requirements, read_requirements

SECRET = "root:x:0:0:TOP-SECRET-LINE"


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


@pytest.fixture
def outside(tmp_path):
    """A file outside the plugin folder whose first line is not a requirement."""
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


def problems(folder):
    with pytest.raises(ManifestError) as info:
        read_manifest(str(folder))
    return {tuple(p["loc"]): p["msg"] for p in info.value.problems}, str(info.value)


@pytest.mark.parametrize("reqs", ["../secret.txt", "sub/../../secret.txt", "{outside}",
                                  "link.txt"])
def test_a_requirements_file_outside_the_folder_is_refused_without_quoting_it(
        tmp_path, outside, reqs):
    folder = tmp_path / "p"
    folder.mkdir()
    os.symlink(outside, folder / "link.txt")  # a symlink inside pointing out
    write(folder, "corral.toml", f'name = "x"\ntarget = "m.py:C"\n'
                                 f'requirements = "{reqs.format(outside=outside)}"\n')
    by_loc, text = problems(folder)
    assert "outside the plugin folder" in by_loc[("requirements",)]
    assert "TOP-SECRET" not in text


def test_an_include_or_constraint_outside_the_folder_is_refused_without_quoting_it(
        tmp_path, outside):
    folder = tmp_path / "p"
    for line in (f"-r {outside}", "-r ../secret.txt", f"--constraint={outside}"):
        write(folder, "requirements.txt", f"msgspec\n{line}\n")
        write(folder, "corral.toml", 'name = "x"\ntarget = "m.py:C"\n'
                                     'requirements = "requirements.txt"\n')
        plugin = Plugin(read_manifest(str(folder)), str(folder), str(folder / "corral.toml"))
        with pytest.raises(RequirementsError) as info:
            plugin.requirements()
        assert "outside the plugin folder" in str(info.value), line
        assert info.value.line == 2
        assert "TOP-SECRET" not in str(info.value)
    # Inside the folder, includes still work.
    write(folder / "sub", "more.txt", "numpy\n")
    write(folder, "requirements.txt", "msgspec\n-r sub/more.txt\n")
    plugin = Plugin(read_manifest(str(folder)), str(folder), str(folder / "corral.toml"))
    assert plugin.requirements() == ["msgspec", "numpy"]
    # Without a root (not a plugin's file), the reader is as before.
    assert read_requirements(folder / "requirements.txt") == ["msgspec", "numpy"]


@pytest.mark.parametrize("target", ["../evil.py:C", "/tmp/evil.py:C", "a/../../evil.py:C"])
def test_a_file_target_outside_the_folder_is_refused(tmp_path, target):
    folder = write(tmp_path / "p", "corral.toml", f'name = "x"\ntarget = "{target}"\n')
    by_loc, _ = problems(folder)
    assert "outside the plugin folder" in by_loc[("target",)]


def test_file_and_module_targets_inside_the_folder_are_fine(tmp_path):
    for target in ("m.py:C", "sub/m.py:C", "package.module:C"):
        folder = write(tmp_path / "p", "corral.toml", f'name = "x"\ntarget = "{target}"\n')
        assert read_manifest(str(folder)).target == target


@pytest.mark.parametrize("item", ["numpy\n--index-url https://evil.example/simple",
                                  "numpy\r--extra-index-url=https://evil.example",
                                  "https://x.example/a.whl\n-e /", "numpy\u2028--pre"])
def test_a_requirement_string_with_a_line_break_is_refused(item):
    with pytest.raises(RequirementsError, match="line break") as info:
        normalize_requirements(["msgspec", item])
    assert info.value.line == 2


def test_a_requirement_with_a_line_break_in_a_manifest_fails_like_a_smuggled_option(tmp_path):
    folder = write(tmp_path / "p", "corral.toml",
                   'name = "x"\ntarget = "m.py:C"\n'
                   'requirements = ["numpy\\n--index-url https://evil.example/simple"]\n')
    plugin = Plugin(read_manifest(str(folder)), str(folder), str(folder / "corral.toml"))
    with pytest.raises(RequirementsError, match="line break"):
        plugin.requirements()
    with pytest.raises(RequirementsError, match="unknown option"):
        normalize_requirements(["--frobnicate yes"])  # the option on its own: refused too


def test_a_nul_in_an_env_value_is_a_manifest_error(tmp_path):
    folder = write(tmp_path / "p", "corral.toml",
                   'name = "x"\ntarget = "m.py:C"\nenv = { GOOD = "1", BAD = "a\\u0000b" }\n')
    by_loc, _ = problems(folder)
    assert set(by_loc) == {("env", "BAD")}
    assert "NUL" in by_loc[("env", "BAD")]
