"""Manifests: corral.toml and [tool.corral], sizes, requirements, every problem at once."""

import pytest

from corral.plugins.errors import ManifestError
from corral.plugins.manifest import Resources, parse_size, read_manifest


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def test_a_full_corral_toml_is_read_with_sizes_in_bytes(tmp_path):
    folder = write(tmp_path / "p", "corral.toml", '''
name = "embedder"
version = "2.1"
target = "model.py:Model"
requirements = ["numpy>=1.24", "msgspec"]
slots = 4
env = { HF_HUB_OFFLINE = "1" }
description = "embeds text"

[resources]
memory = "2GiB"
gpus = 1
gpu_memory = "512MB"
''')
    m = read_manifest(str(folder))
    assert (m.name, m.version, m.target, m.slots) == ("embedder", "2.1", "model.py:Model", 4)
    assert m.requirements == ["numpy>=1.24", "msgspec"]
    assert m.env == {"HF_HUB_OFFLINE": "1"}
    assert m.resources == Resources(memory=2 * 2**30, gpus=1, gpu_memory=512 * 10**6)


def test_defaults_when_only_the_required_keys_are_given(tmp_path):
    folder = write(tmp_path / "p", "corral.toml", 'name = "x"\ntarget = "pkg.mod:C"\n')
    m = read_manifest(str(folder))
    assert (m.version, m.requirements, m.slots, m.env) == ("0", [], 1, {})
    assert m.resources == Resources()


def test_pyproject_tool_corral_takes_name_and_version_from_project(tmp_path):
    folder = write(tmp_path / "p", "pyproject.toml", '''
[project]
name = "my-plugin"
version = "0.3.0"

[tool.corral]
target = "my_plugin.model:Model"

[tool.corral.resources]
memory = 1048576
''')
    m = read_manifest(str(folder))
    assert (m.name, m.version, m.target) == ("my-plugin", "0.3.0", "my_plugin.model:Model")
    assert m.resources.memory == 2**20


def test_corral_toml_wins_over_pyproject(tmp_path):
    folder = write(tmp_path / "p", "pyproject.toml", '[tool.corral]\nname = "from-pyproject"\n'
                                                     'target = "a:B"\n')
    write(folder, "corral.toml", 'name = "from-corral-toml"\ntarget = "a:B"\n')
    assert read_manifest(str(folder)).name == "from-corral-toml"


def test_a_requirements_file_is_resolved_against_the_folder(tmp_path):
    folder = write(tmp_path / "p", "corral.toml",
                   'name = "x"\ntarget = "m.py:C"\nrequirements = "reqs/requirements.txt"\n')
    write(folder / "reqs", "requirements.txt", "numpy\n")
    m = read_manifest(str(folder))
    assert m.requirements == str(folder / "reqs" / "requirements.txt")


def test_every_problem_is_listed_in_one_error_with_where_it_sat(tmp_path):
    folder = write(tmp_path / "p", "corral.toml", '''
name = "bad name"
version = 3
target = "no-colon"
requirements = ["ok", 7]
slots = 0
colour = "red"
env = { GOOD = 1 }

[resources]
memory = "2 gigs"
gpus = -1
vram = 3
''')
    with pytest.raises(ManifestError) as info:
        read_manifest(str(folder))
    err = info.value
    assert err.source == str(folder / "corral.toml")
    by_loc = {tuple(p["loc"]): p["msg"] for p in err.problems}
    assert set(by_loc) == {("name",), ("version",), ("target",), ("requirements", 1),
                           ("slots",), ("colour",), ("env", "GOOD"), ("resources", "memory"),
                           ("resources", "gpus"), ("resources", "vram")}
    assert "unknown key" in by_loc[("colour",)] and "unknown key" in by_loc[("resources", "vram")]
    assert "2 gigs" in by_loc[("resources", "memory")]
    assert "file.py:Class" in by_loc[("target",)]
    assert "colour: unknown key" in str(err) and "resources.memory" in str(err)


def test_missing_keys_and_a_missing_requirements_file_are_problems(tmp_path):
    folder = write(tmp_path / "p", "corral.toml", 'requirements = "nope.txt"\n')
    with pytest.raises(ManifestError) as info:
        read_manifest(str(folder))
    by_loc = {tuple(p["loc"]): p["msg"] for p in info.value.problems}
    assert by_loc[("name",)] == by_loc[("target",)] == "required key is missing"
    assert "nope.txt" in by_loc[("requirements",)]


def test_pyproject_problems_are_located_under_tool_corral(tmp_path):
    folder = write(tmp_path / "p", "pyproject.toml", '[tool.corral]\ntarget = 5\n')
    with pytest.raises(ManifestError) as info:
        read_manifest(str(folder))
    locs = [p["loc"] for p in info.value.problems]
    assert ["tool", "corral", "target"] in locs and ["tool", "corral", "name"] in locs


@pytest.mark.parametrize("text, message", [
    (None, "no corral.toml"),
    ("name = ", "not valid TOML"),
])
def test_no_manifest_or_broken_toml_is_a_manifest_error(tmp_path, text, message):
    folder = tmp_path / "p"
    folder.mkdir()
    if text is not None:
        (folder / "corral.toml").write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(str(folder))


def test_a_pyproject_without_tool_corral_says_so(tmp_path):
    folder = write(tmp_path / "p", "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ManifestError, match=r"no \[tool.corral\] table"):
        read_manifest(str(folder))


@pytest.mark.parametrize("value, expected", [
    (0, 0), (1234, 1234), ("512MB", 512 * 10**6), ("2GiB", 2 * 2**30), ("1.5 GB", 15 * 10**8),
    ("64kib", 64 * 1024), ("3 B", 3), ("10", 10), ("1TiB", 2**40),
])
def test_sizes(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["2 gigs", "GiB", "-1GB", -5, True, 1.5, "1.2.3MB", None])
def test_bad_sizes_are_value_errors(value):
    with pytest.raises(ValueError):
        parse_size(value)
