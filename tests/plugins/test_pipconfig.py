"""pip's configuration, read in pip's order and precedence, turned into uv flags."""

import os

import pytest

from corral.plugins.errors import EnvironmentBuildError
from corral.plugins.pipconfig import PipSettings, pip_config_files, read_pip_settings


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_files_in_pips_order(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": f"{tmp_path}/x1:{tmp_path}/x2"}
    assert pip_config_files(env, site_prefix=str(tmp_path / "venv")) == [
        f"{tmp_path}/x1/pip/pip.conf", f"{tmp_path}/x2/pip/pip.conf", "/etc/pip.conf",
        f"{tmp_path}/home/.pip/pip.conf", f"{tmp_path}/home/.config/pip/pip.conf",
        f"{tmp_path}/venv/pip.conf"]


def test_an_existing_pip_config_file_replaces_the_user_files(tmp_path):
    mine = _write(tmp_path / "mine.conf", "[global]\n")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "PIP_CONFIG_FILE": mine}
    files = pip_config_files(env, site_prefix=str(tmp_path / "venv"))
    assert files[-2:] == [f"{tmp_path}/venv/pip.conf", mine]
    assert not any(f.startswith(str(tmp_path / "cfg")) for f in files)
    # a PIP_CONFIG_FILE that does not exist keeps the user files (pip does the same)
    env["PIP_CONFIG_FILE"] = str(tmp_path / "absent.conf")
    assert f"{tmp_path}/cfg/pip/pip.conf" in pip_config_files(env, site_prefix="/v")


def test_devnull_reads_no_file_but_variables_still_count():
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "https://idx/simple"}
    assert pip_config_files(env) == []
    assert read_pip_settings(env).index_url == "https://idx/simple"


def test_precedence_later_files_then_install_section_then_variables(tmp_path):
    low = _write(tmp_path / "global.conf",
                 "[global]\nindex-url = https://low/simple\nfind-links = /low\n"
                 "trusted-host = a.example b.example\n"
                 "[install]\nextra-index-url = https://install-low/simple\n")
    high = _write(tmp_path / "user.conf",
                  "[global]\nindex_url = https://high/simple\n"
                  "extra-index-url = https://ignored-by-install-section/simple\n"
                  "constraint = /c1.txt\n   /c2.txt\n")
    settings = read_pip_settings({"PIP_FIND_LINKS": "/env1 /env2", "PIP_NO_INDEX": "yes"},
                                 files=[low, high, str(tmp_path / "absent.conf")])
    assert settings == PipSettings(
        index_url="https://high/simple",                       # later file wins
        extra_index_urls=("https://install-low/simple",),      # [install] beats [global]
        find_links=("/env1", "/env2"),                         # PIP_* beats every file
        constraints=("/c1.txt", "/c2.txt"),                    # multi-line list
        no_index=True,
        trusted_hosts=("a.example", "b.example"))
    assert settings.files == (low, high)


def test_uv_flags_for_every_setting():
    settings = PipSettings(index_url="https://i/simple", extra_index_urls=("file:///e1", "e2"),
                           find_links=("/w",), constraints=("/c.txt",), no_index=True,
                           trusted_hosts=("h",), cert="/ca.pem")
    assert settings.uv_args({}) == [
        "--index-url", "https://i/simple",
        "--extra-index-url", "file:///e1", "--extra-index-url", "e2",
        "--index-strategy", "unsafe-best-match",
        "--find-links", "/w", "--constraint", "/c.txt", "--no-index",
        "--allow-insecure-host", "h"]
    assert settings.uv_env({}) == {"SSL_CERT_FILE": "/ca.pem"}


def test_what_the_user_set_for_uv_itself_stands():
    settings = PipSettings(index_url="https://i/simple", extra_index_urls=("e",),
                           find_links=("/w",), cert="/ca.pem")
    uv_env = {"UV_DEFAULT_INDEX": "https://mine/simple", "UV_INDEX_STRATEGY": "first-index",
              "SSL_CERT_FILE": "/mine.pem"}
    assert settings.uv_args(uv_env) == ["--extra-index-url", "e", "--find-links", "/w"]
    assert settings.uv_env(uv_env) == {}


def test_a_broken_config_file_is_named(tmp_path):
    bad = _write(tmp_path / "bad.conf", "index-url = no section header\n")
    with pytest.raises(EnvironmentBuildError, match="bad.conf"):
        read_pip_settings({}, files=[bad])
