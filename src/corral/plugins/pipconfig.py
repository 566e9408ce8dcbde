"""The user's pip configuration, read as pip reads it, for installers that do not read it.

uv ignores pip.conf and ``PIP_*`` variables, yet a machine's pip configuration is often what
makes an install work at all (a private index, a folder of local wheels, constraints that
keep ``torch`` at the CPU build lying on disk). So corral reads the same files in the same
order as pip (https://pip.pypa.io/en/stable/topics/configuration/) and passes the options
that decide *what* gets installed to uv as flags:

======================  =============================
pip                     uv
======================  =============================
index-url               --index-url
extra-index-url         --extra-index-url (+ --index-strategy unsafe-best-match, pip's rule:
                        the best version from any index, not the first index that has one)
find-links              --find-links
constraint              --constraint
no-index                --no-index
trusted-host            --allow-insecure-host
cert                    SSL_CERT_FILE in uv's environment
======================  =============================

Precedence, as pip: files in the order global (``$XDG_CONFIG_DIRS/pip/pip.conf``,
``/etc/pip.conf``), user (``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``; skipped
when ``PIP_CONFIG_FILE`` names an existing file), site (``<prefix>/pip.conf``), then
``PIP_CONFIG_FILE``; their ``[global]`` sections, then their ``[install]`` sections, then
``PIP_*`` variables, each later one replacing a value (lists are replaced, not merged).
``PIP_CONFIG_FILE=/dev/null`` reads no file at all. An option the user already set for uv
itself (``UV_INDEX_URL``, ``UV_FIND_LINKS``, ...) is left to uv.
"""

from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .errors import EnvironmentBuildError

# uv's own variables for the same settings: when one is set, uv's setting stands
_UV_OWN = {
    "index-url": ("UV_INDEX_URL", "UV_DEFAULT_INDEX"),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", "UV_INDEX"),
    "find-links": ("UV_FIND_LINKS",),
    "constraint": ("UV_CONSTRAINT",),
    "no-index": ("UV_NO_INDEX",),
    "trusted-host": ("UV_INSECURE_HOST",),
    "cert": ("SSL_CERT_FILE",),
}


@dataclass(frozen=True)
class PipSettings:
    """The options of the user's pip configuration that decide what gets installed."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    files: tuple[str, ...] = field(default=(), compare=False)  # the files that were read

    def uv_args(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """uv pip install flags for these settings (skipping what ``environ``'s ``UV_*``
        variables already set)."""
        env = os.environ if environ is None else environ

        def wanted(option: str) -> bool:
            return not any(env.get(name) for name in _UV_OWN[option])

        args: list[str] = []
        if self.index_url and wanted("index-url"):
            args += ["--index-url", self.index_url]
        if self.extra_index_urls and wanted("extra-index-url"):
            for url in self.extra_index_urls:
                args += ["--extra-index-url", url]
            if not env.get("UV_INDEX_STRATEGY"):
                args += ["--index-strategy", "unsafe-best-match"]
        if wanted("find-links"):
            for link in self.find_links:
                args += ["--find-links", link]
        if wanted("constraint"):
            for path in self.constraints:
                args += ["--constraint", path]
        if self.no_index and wanted("no-index"):
            args.append("--no-index")
        if wanted("trusted-host"):
            for host in self.trusted_hosts:
                args += ["--allow-insecure-host", host]
        return args

    def uv_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables to add to uv's environment: ``SSL_CERT_FILE`` from pip's ``cert``."""
        env = os.environ if environ is None else environ
        if self.cert and not env.get("SSL_CERT_FILE"):
            return {"SSL_CERT_FILE": self.cert}
        return {}

    def describe(self) -> str:
        """One line for a progress display: what the configuration adds."""
        parts = []
        if self.index_url:
            parts.append(f"index-url {self.index_url}")
        parts += [f"extra-index-url {u}" for u in self.extra_index_urls]
        parts += [f"find-links {f}" for f in self.find_links]
        parts += [f"constraint {c}" for c in self.constraints]
        if self.no_index:
            parts.append("no-index")
        parts += [f"trusted-host {h}" for h in self.trusted_hosts]
        return "; ".join(parts) if parts else "(nothing)"


def pip_config_files(environ: Mapping[str, str] | None = None,
                     site_prefix: str | None = None) -> list[str]:
    """The configuration files pip would read, lowest precedence first (existing or not)."""
    env = os.environ if environ is None else environ
    config_file = env.get("PIP_CONFIG_FILE")
    if config_file == os.devnull:
        return []
    home = env.get("HOME") or os.path.expanduser("~")
    if sys.platform == "darwin":
        global_files = ["/Library/Application Support/pip/pip.conf"]
        user_dir = os.path.join(home, "Library", "Application Support", "pip")
        if not os.path.isdir(user_dir):
            user_dir = os.path.join(home, ".config", "pip")
    else:
        xdg_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
        global_files = [os.path.join(d, "pip", "pip.conf")
                        for d in xdg_dirs.split(os.pathsep) if d] + ["/etc/pip.conf"]
        user_dir = os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                                "pip")
    files = list(global_files)
    if not (config_file and os.path.exists(config_file)):
        files += [os.path.join(home, ".pip", "pip.conf"), os.path.join(user_dir, "pip.conf")]
    files.append(os.path.join(site_prefix if site_prefix is not None else sys.prefix,
                              "pip.conf"))
    if config_file:
        files.append(config_file)
    return files


def read_pip_settings(environ: Mapping[str, str] | None = None,
                      site_prefix: str | None = None,
                      files: Sequence[str] | None = None) -> PipSettings:
    """The user's pip settings from pip's configuration files and ``PIP_*`` variables of
    ``environ`` (default ``os.environ``). ``site_prefix`` is the environment whose
    ``pip.conf`` counts as the site file (default: this interpreter's ``sys.prefix``);
    ``files`` replaces pip_config_files() (lowest precedence first). A file pip could not
    parse raises EnvironmentBuildError naming it."""
    env = os.environ if environ is None else environ
    sections: dict[str, list[dict[str, str]]] = {"global": [], "install": []}
    read: list[str] = []
    for path in (pip_config_files(env, site_prefix) if files is None else files):
        if not os.path.isfile(path):
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise EnvironmentBuildError(f"cannot read pip's configuration file {path}",
                                        str(exc)) from exc
        read.append(path)
        for section in sections:
            if parser.has_section(section):
                sections[section].append({_option_name(k): v
                                          for k, v in parser.items(section)})
    values: dict[str, str] = {}
    for section in ("global", "install"):
        for items in sections[section]:
            values.update(items)
    for name, value in env.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            values[_option_name(name[4:])] = value
    return PipSettings(
        index_url=values.get("index-url") or None,
        extra_index_urls=tuple(values.get("extra-index-url", "").split()),
        find_links=tuple(values.get("find-links", "").split()),
        constraints=tuple(values.get("constraint", "").split()),
        no_index=_true(values.get("no-index", "")),
        trusted_hosts=tuple(values.get("trusted-host", "").split()),
        cert=values.get("cert") or None,
        files=tuple(read),
    )


def _option_name(key: str) -> str:
    return key.lower().lstrip("-").replace("_", "-")


def _true(value: str) -> bool:
    # pip's strtobool; an unknown word counts as false rather than failing the build
    return value.strip().lower() in ("y", "yes", "t", "true", "on", "1")
