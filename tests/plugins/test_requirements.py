"""Requirement lists and files: read like pip, normalized so equal sets hash equal."""

import os

import pytest

from corral.plugins.envs import read_requirements
from corral.plugins.errors import RequirementsError
from corral.plugins.requirements import constraint_files, normalize_requirements, requirement_names


def test_read_handles_comments_blank_lines_continuations_and_includes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text("Requests[Socks,security] >= 2.0  # why\n")
    (tmp_path / "constraints.txt").write_text("numpy<2\n")
    (tmp_path / "requirements.txt").write_text(
        "# a comment\n"
        "\n"
        "NumPy>=1.24,<2 \\\n"
        "    ; python_version >= '3.8'\n"
        "-r sub/more.txt\n"
        "-c constraints.txt\n"
        "--extra-index-url=https://example.org/simple\n"
        "-e ./local-pkg\n"
        "./wheels/tiny-1.0-py3-none-any.whl\n"
        "--no-index\n"
        "pkg==1.0 --hash=sha256:abc\n")
    lines = read_requirements(tmp_path / "requirements.txt")
    assert lines == [
        'numpy<2,>=1.24; python_version >= "3.8"',
        "requests[security,socks]>=2.0",
        f"--constraint {tmp_path / 'constraints.txt'}",
        "--extra-index-url https://example.org/simple",
        f"--editable {tmp_path / 'local-pkg'}",
        str(tmp_path / "wheels" / "tiny-1.0-py3-none-any.whl"),
        "--no-index",
        "pkg==1.0 --hash=sha256:abc",
    ]
    assert constraint_files(lines) == [str(tmp_path / "constraints.txt")]
    assert requirement_names(lines) == {"numpy", "requests", "pkg"}


def test_a_missing_include_names_the_including_file_and_line(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("msgspec\n-r nowhere.txt\n")
    with pytest.raises(RequirementsError) as info:
        read_requirements(req)
    assert info.value.source == str(req) and info.value.line == 2
    assert "nowhere.txt" in str(info.value)


def test_a_missing_file_is_a_requirements_error(tmp_path):
    with pytest.raises(RequirementsError, match="cannot read requirements file"):
        read_requirements(tmp_path / "absent.txt")


def test_a_circular_include_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("-r b.txt\n")
    (tmp_path / "b.txt").write_text("x\n-r a.txt\n")
    with pytest.raises(RequirementsError, match="circular") as info:
        read_requirements(tmp_path / "a.txt")
    assert info.value.source == str(tmp_path / "b.txt") and info.value.line == 2


@pytest.mark.parametrize("line, match", [
    ("--frobnicate yes", "unknown option '--frobnicate'"),
    ("-c", "--constraint needs a value"),
    ("--no-index please", "takes no value"),
    ("not a requirement!", "not a requirement"),
])
def test_a_malformed_line_names_file_and_line(tmp_path, line, match):
    req = tmp_path / "r.txt"
    req.write_text(f"msgspec\n\n{line}\n")
    with pytest.raises(RequirementsError, match=match) as info:
        read_requirements(req)
    assert info.value.line == 3 and str(req) in str(info.value)


def test_normalized_sets_ignore_order_spelling_and_duplicates():
    a = normalize_requirements(["Torch==2.13.0", "msgspec >= 0.18", "torch == 2.13.0"])
    b = normalize_requirements(["msgspec>=0.18", "torch==2.13.0"])
    assert a == b == ("msgspec>=0.18", "torch==2.13.0")
    assert normalize_requirements(["", "  # only a comment"]) == ()


def test_inline_relative_paths_resolve_against_base_dir(tmp_path):
    lines = normalize_requirements(["./pkg", "-c c.txt"], base_dir=tmp_path)
    assert lines == (f"--constraint {tmp_path / 'c.txt'}", str(tmp_path / "pkg"))


def test_inline_lists_must_be_lists_of_strings():
    with pytest.raises(TypeError, match="not one string"):
        normalize_requirements("torch")
    with pytest.raises(TypeError, match=r"requirements\[1\] must be a str"):
        normalize_requirements(["torch", 3])
    with pytest.raises(RequirementsError, match="<requirements>, line 2"):
        normalize_requirements(["torch", "torch ==="])


def test_inline_r_expands_a_file(tmp_path, monkeypatch):
    (tmp_path / "r.txt").write_text("B\na\n")
    monkeypatch.chdir(tmp_path)
    assert normalize_requirements(["-r r.txt", "c"]) == ("a", "b", "c")
    assert os.getcwd() == str(tmp_path)
