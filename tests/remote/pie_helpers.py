"""A PIE-protocol server (``python -m corral.remote.pie``) on 127.0.0.1 for the tests.

The server is started detached (its launcher exits, so it is not a descendant of pytest):
it forks a worker per launch and keeps warm ones, which the global ``no_leftovers`` fixture
would otherwise count as a test's leftovers. What a test's processes leave behind is
checked by the tests themselves (the program's pid is gone after terminate, disconnect,
return). Stopped by pid, SIGTERM then SIGKILL, and waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import corral

SRC = os.path.dirname(os.path.dirname(os.path.abspath(corral.__file__)))

LAUNCHER = r"""
import os, subprocess, sys
log = open(sys.argv[1], "wb")
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True)
print(p.pid, flush=True)
"""


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class PieServer:
    """``python -m corral.remote.pie`` (or, with ``host=True``, ``corral host``, which
    mounts the same endpoint at /v1/ws), detached, on 127.0.0.1 port 0."""

    def __init__(self, tmp, token: str | None = None, extra_env: dict | None = None,
                 warm: int = 2, own_pip_config: bool = False, host: bool = False):
        self.root = tmp / "programs"
        port_file = tmp / "port"
        self.log = tmp / "server.log"
        env = dict(os.environ, PYTHONPATH=SRC)
        env.pop("CORRAL_TOKEN", None)
        if token is not None:
            env["CORRAL_TOKEN"] = token
        if own_pip_config:  # only extra_env's pip settings: none of the machine's
            env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env.update(extra_env or {})
        if host:
            env["CORRAL_HOME"] = str(tmp / "home")
            argv = [sys.executable, "-m", "corral", "host", "--host", "127.0.0.1",
                    "--port", "0", "--store", str(tmp / "store")]
        else:
            argv = [sys.executable, "-m", "corral.remote.pie", "--root", str(self.root),
                    "--port", "0", "--port-file", str(port_file), "--warm", str(warm),
                    "--env-root", str(tmp / "envs")]
        out = subprocess.run([sys.executable, "-c", LAUNCHER, str(self.log), *argv],
                             env=env, capture_output=True, text=True, timeout=30, check=True)
        self.pid = int(out.stdout.strip())
        deadline = time.monotonic() + 60
        while (self._port_from_log() if host else not port_file.exists()):
            if not pid_alive(self.pid) or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{self.log.read_text()}")
            time.sleep(0.01)
        self.port = self._port if host else int(port_file.read_text())
        self.url = f"ws://127.0.0.1:{self.port}"

    def _port_from_log(self) -> bool:
        """True while the log has no "Uvicorn running on" line yet."""
        text = self.log.read_text() if self.log.exists() else ""
        if "Uvicorn running on http://" not in text:
            return True
        self._port = int(text.split("Uvicorn running on http://", 1)[1].split()[0]
                         .rsplit(":", 1)[1])
        return False

    def descendants(self) -> list[int]:
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        import psutil

        tree = self.descendants()
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while any(map(pid_alive, [self.pid, *tree])) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = [pid for pid in [self.pid, *tree] if pid_alive(pid)]
        for pid in left:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        assert not left, f"the server left processes behind: {left}"
