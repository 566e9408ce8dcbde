"""Plugin environments, built for real with uv and with pip into a temporary cache.

Builds need msgspec from the machine's usual sources (PyPI, or the indexes its pip
configuration names); every other package is a tiny wheel made here.
"""

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import zipfile

import pytest

import corral
from conftest import fixture_ref, wait_until
from corral.plugins import installers
from corral.plugins.envs import Environment, EnvironmentCache, default_root
from corral.plugins.errors import EnvironmentBuildError, EnvironmentInUse, RequirementsError

INSTALLERS = ["uv", "pip"]
SRC = os.path.dirname(os.path.dirname(os.path.abspath(corral.__file__)))


def make_wheel(folder, name, version, body="") -> str:
    """A pure-Python wheel of one module ``name`` (dashes become underscores) holding
    ``VERSION`` and ``body``; returns its path."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n{body}",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: corral-tests\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        record.append(f"{path},sha256={digest.rstrip(b'=').decode()},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, f"{module}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


def make_index(root, wheels_by_project) -> str:
    """A PEP 503 "simple" index in ``root`` linking local wheels; returns its file:// URL."""
    simple = os.path.join(root, "simple")
    for project, wheels in wheels_by_project.items():
        os.makedirs(os.path.join(simple, project))
        links = "".join(f'<a href="file://{w}">{os.path.basename(w)}</a>\n' for w in wheels)
        with open(os.path.join(simple, project, "index.html"), "w") as f:
            f.write(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    return "file://" + simple


def installed_version(env: Environment, project: str) -> str:
    out = subprocess.run([env.python, "-I", "-c",
                          f"import importlib.metadata as m; print(m.version({project!r}))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def env_folders(root) -> list:
    return sorted(n for n in os.listdir(root) if not n.startswith(".")) \
        if os.path.isdir(root) else []


# -- building and reuse -------------------------------------------------------------------


def test_a_uv_build_is_reused_without_starting_anything(tmp_path, monkeypatch):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    lines = []
    env = cache.ensure(["msgspec"], progress=lines.append)
    assert env.installer == "uv" and cache.installer == "uv"
    assert env.path == tmp_path / "envs" / env.key and os.access(env.python, os.X_OK)
    assert env.requirements == ("msgspec",)
    assert env.python_version == sys.version.split()[0]
    assert "creating the virtualenv" in lines and any("msgspec" in ln for ln in lines[3:])
    assert env.size_bytes > 100_000  # msgspec's extension module alone
    assert env.summary()["size_bytes"] == env.size_bytes

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a cached ensure() started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    again = []
    assert cache.ensure(["MsgSpec "], progress=again.append) == env
    assert again == []  # nothing to report: nothing was done
    assert cache.get(["msgspec"]) == env
    assert EnvironmentCache(tmp_path / "envs").list() == [env]


def test_the_key_follows_requirements_interpreter_and_constraint_contents(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs")
    assert cache.key(["b", "A>=1"]) == cache.key(["a >= 1", "b", "b"])
    assert cache.key(["a"]) != cache.key(["a==1"])
    assert EnvironmentCache(tmp_path / "envs", python=sys.executable).key(["a"]) == \
        cache.key(["a"])
    constraints = tmp_path / "c.txt"
    constraints.write_text("a<2\n")
    before = cache.key(["a", f"-c {constraints}"])
    constraints.write_text("a<3\n")
    assert cache.key(["a", f"-c {constraints}"]) != before
    with pytest.raises(RequirementsError, match="cannot read constraint file"):
        cache.key(["a", f"-c {tmp_path / 'absent.txt'}"])
    assert cache.get(["a"]) is None and cache.list() == []


def test_bad_arguments_are_typed_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="/no/such-python"):
        EnvironmentCache(tmp_path, python="/no/such-python")
    with pytest.raises(ValueError, match="installer must be"):
        EnvironmentCache(tmp_path, installer="conda")
    monkeypatch.setattr(installers, "find_uv", lambda: None)
    with pytest.raises(EnvironmentBuildError, match="uv is not installed"):
        EnvironmentCache(tmp_path, installer="uv")
    assert EnvironmentCache(tmp_path, installer="auto").installer == "pip"
    with pytest.raises(TypeError, match="not one string"):
        EnvironmentCache(tmp_path).ensure("msgspec")


def test_the_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / "envs"
    monkeypatch.delenv("CORRAL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "corral" / "envs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_root() == tmp_path / "user" / ".cache" / "corral" / "envs"
    assert EnvironmentCache().root == default_root()


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_worker_runs_in_the_environment_and_sees_only_its_packages(tmp_path, installer,
                                                                     monkeypatch):
    torch_spec = importlib.util.find_spec("torch")
    assert torch_spec is not None, "the host is meant to have torch"
    # A host PYTHONPATH pointing at its own packages (torch's folder included) must not
    # reach the environment's worker, which inherits the host's variables.
    host_packages = os.path.dirname(os.path.dirname(torch_spec.origin))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([SRC, host_packages]))
    env = EnvironmentCache(tmp_path / "envs", installer=installer).ensure([])
    with corral.Worker(fixture_ref("env_probe:Probe"), python=env.python,
                       env=env.worker_env) as w:
        where = w.call("where")
        assert where["prefix"] == str(env.path)
        assert where["pythonpath"] == ""
        # corral comes from the environment's link to the host's package, nothing else
        assert where["corral"] == str(env.path / "corral-runtime" / "corral" / "__init__.py")
        assert os.path.realpath(where["corral"]) == os.path.realpath(corral.__file__)
        assert where["msgspec"] == __import__("msgspec").__version__  # pinned to the host's
        foreign = [p for p in where["path"] if "site-packages" in p
                   and not p.startswith(str(env.path))]
        assert foreign == [] and SRC not in where["path"]
        assert host_packages not in where["path"]
        assert w.call("can_import", "msgspec")
        assert not w.call("can_import", "torch")
        assert not w.call("can_import", "numpy")


def test_a_killed_build_is_removed_and_rebuilt(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    key = cache.key([])
    half = tmp_path / "envs" / key
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "junk").write_text("left by a build killed with SIGKILL")
    assert cache.get([]) is None and cache.list() == []
    lines = []
    env = cache.ensure([], progress=lines.append)
    assert any("removing the incomplete environment" in ln for ln in lines)
    assert not (half / "bin" / "junk").exists() and cache.list() == [env]


def test_an_environment_whose_corral_link_broke_counts_as_missing(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    env = cache.ensure([])
    link = env.path / "corral-runtime" / "corral"
    link.unlink()
    link.symlink_to(tmp_path / "moved-away")
    assert cache.get([]) is None and cache.list() == []
    assert cache.ensure([]).key == env.key and cache.get([]) is not None


def test_remove(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    env = cache.ensure([])
    cache.remove(env.key)
    assert not env.path.exists() and cache.get([]) is None and cache.list() == []
    with pytest.raises(KeyError, match=env.key):
        cache.remove(env.key)
    with pytest.raises(ValueError, match="not an environment key"):
        cache.remove("../../etc")


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_failed_build_says_why_and_leaves_nothing(tmp_path, installer):
    cache = EnvironmentCache(tmp_path / "envs", installer=installer)
    lines = []
    with pytest.raises(EnvironmentBuildError) as info:
        cache.ensure(["corraltest-no-such-project==1.0"], progress=lines.append)
    err = info.value
    assert "corraltest-no-such-project" in err.output  # the installer's own words
    assert err.output in str(err) and "corraltest-no-such-project==1.0" in str(err)
    assert f"{installer} install failed (exit code 1)" in str(err).replace("uv pip", "uv")
    assert env_folders(tmp_path / "envs") == []
    assert cache.list() == [] and cache.get(["corraltest-no-such-project==1.0"]) is None
    # the installer's lines reached the progress callback as they came
    assert any("corraltest-no-such-project" in ln for ln in lines)


def test_requirements_that_replace_corral_fail_the_runtime_check(tmp_path):
    wheels = tmp_path / "wheels"
    fake = make_wheel(wheels, "corral", "99.0")
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    with pytest.raises(EnvironmentBuildError, match="imports corral from"):
        cache.ensure([fake])
    assert env_folders(tmp_path / "envs") == []


# -- pip's configuration --------------------------------------------------------------------


@pytest.fixture
def pip_config(tmp_path, monkeypatch):
    """A PIP_CONFIG_FILE naming a find-links folder, a file:// index and a constraint
    file, with no PIP_* variable of the machine in the way."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    links = tmp_path / "links"
    make_wheel(links, "corraltest-flpkg", "1.0")
    index = make_index(tmp_path / "index", {"corraltest-idxpkg": [
        make_wheel(tmp_path / "files", "corraltest-idxpkg", v) for v in ("2.0", "3.0")]})
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("corraltest-idxpkg<3\n")
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {links}\nextra-index-url = {index}\n"
                      f"constraint = {constraints}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    return config


@pytest.mark.parametrize("installer", INSTALLERS)
def test_builds_honour_pips_configuration(tmp_path, pip_config, installer):
    cache = EnvironmentCache(tmp_path / "envs", installer=installer)
    lines = []
    env = cache.ensure(["corraltest-flpkg", "corraltest-idxpkg"], progress=lines.append)
    assert installed_version(env, "corraltest-flpkg") == "1.0"    # from find-links only
    assert installed_version(env, "corraltest-idxpkg") == "2.0"   # index + constraint
    if installer == "uv":  # what corral passed on is shown
        assert any(ln.startswith("pip configuration for uv:") and str(pip_config.parent) in ln
                   for ln in lines)


# -- concurrency ----------------------------------------------------------------------------

CHILD = r"""
import json, sys
from corral.plugins.envs import EnvironmentCache

def progress(line):
    print(json.dumps({"progress": line}), flush=True)

env = EnvironmentCache(sys.argv[1], installer="uv").ensure([], progress=progress)
print(json.dumps({"env": [env.key, env.created_at]}), flush=True)
"""


def _collect(stream, into):
    for line in stream:
        into.append(json.loads(line))


def test_two_processes_ensuring_one_key_build_it_once(tmp_path):
    root = tmp_path / "envs"
    cache = EnvironmentCache(root, installer="uv")
    key = cache.key([])
    procs, outputs, readers = [], [], []
    try:
        # Hold the build lock so that both children are surely waiting on it at once.
        with cache._locked(key, lambda line: None):
            for _ in range(2):
                proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root)],
                                        stdout=subprocess.PIPE, text=True)
                out: list = []
                reader = threading.Thread(target=_collect, args=(proc.stdout, out))
                reader.start()
                procs.append(proc), outputs.append(out), readers.append(reader)
            wait_until(lambda: all(any("waiting for another build" in m.get("progress", "")
                                       for m in out) for out in outputs),
                       timeout=60, what="both processes to wait for the lock")
        for proc in procs:
            assert proc.wait(timeout=120) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    built = [any(m.get("progress") == "creating the virtualenv" for m in out)
             for out in outputs]
    assert sorted(built) == [False, True]
    assert any("built meanwhile" in m.get("progress", "") for m in outputs[built.index(False)])
    results = [next(m["env"] for m in out if "env" in m) for out in outputs]
    assert results[0] == results[1] and results[0][0] == key
    assert [e.key for e in cache.list()] == [key]


def test_threads_ensuring_one_key_build_it_once(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    key = cache.key([])
    logs: list = [[] for _ in range(3)]
    results: list = [None] * 3

    def ensure(i):
        results[i] = cache.ensure([], progress=logs[i].append)

    threads = [threading.Thread(target=ensure, args=(i,)) for i in range(3)]
    with cache._locked(key, lambda line: None):
        for t in threads:
            t.start()
        wait_until(lambda: all(any("waiting for another build" in ln for ln in log)
                               for log in logs), what="every thread to wait for the lock")
    for t in threads:
        t.join(timeout=120)
    assert sum("creating the virtualenv" in log for log in logs) == 1
    assert results[0] == results[1] == results[2] and results[0].key == key


def test_an_interrupted_build_stops_the_installer_and_leaves_nothing(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    seen = []
    installing = False

    def progress(line):
        nonlocal installing
        seen.append(line)
        if line.startswith("installing "):
            installing = True
        elif installing and not line.startswith("pip configuration for uv:"):
            raise KeyboardInterrupt  # on uv pip install's first line: uv is running

    with pytest.raises(KeyboardInterrupt):
        cache.ensure(["msgspec"], progress=progress)
    assert installing and env_folders(tmp_path / "envs") == [] and cache.list() == []
    # (the autouse no_leftovers fixture checks that uv was stopped)


def test_an_interrupted_step_takes_what_the_installer_started_with_it(tmp_path):
    import psutil

    # An "installer" that starts a helper of its own (as pip starts build backends), then
    # reports; interrupting on that line must end both.
    script = ("import subprocess, sys, time\n"
              "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('helper', helper.pid, flush=True)\n"
              "time.sleep(60)\n")
    pids = []

    def progress(line):
        if line.startswith("helper "):
            pids.append(int(line.split()[1]))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        installers.run_step("a step", [sys.executable, "-c", script], cwd=tmp_path,
                            progress=progress)

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: gone(pids[0]), 10, "the installer's helper to end")


def test_an_environment_in_use_is_not_removed_until_let_go(tmp_path):
    cache = EnvironmentCache(tmp_path / "envs", installer="uv")
    env = cache.ensure([])
    holds = [cache.hold(env), cache.hold(env)]  # any number of holders
    # another process (as `corral plugins uninstall` would be) is refused too
    code = ("import sys; from corral.plugins.envs import EnvironmentCache\n"
            "from corral.plugins.errors import EnvironmentInUse\n"
            f"cache = EnvironmentCache({str(tmp_path / 'envs')!r}, installer='uv')\n"
            f"try:\n    cache.remove({env.key!r})\n"
            "except EnvironmentInUse as exc:\n    print('refused:', exc); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 3, other.stderr
    assert "is in use" in other.stdout
    holds[0].release()
    with pytest.raises(EnvironmentInUse):
        cache.remove(env.key)  # one holder is still there
    holds[1].release()
    holds[1].release()  # (twice is harmless)
    cache.remove(env.key)
    assert cache.get([]) is None
