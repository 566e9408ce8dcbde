import os
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MODEL = os.path.join(FIXTURES, "remote_model.py")
TOKEN = "remote-test-token-0123456789"


class Host:
    """A real ``corral host`` in a subprocess on 127.0.0.1 (port 0), its stderr collected."""

    def __init__(self, store: str, *args: str, token: str | None = TOKEN, host: str = "127.0.0.1",
                 home: str | None = None):
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
        if home is not None:  # where environments are built (CORRAL_HOME/envs)
            env["CORRAL_HOME"] = home
        env.pop("CORRAL_TOKEN", None)
        if token is not None:
            env["CORRAL_TOKEN"] = token
        self.token = token
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "host", "--host", host, "--port", "0",
             "--store", store, *args], stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or self.url is None:
            self.stop()
            raise AssertionError("corral host did not start:\n" + self.log)
        self.http = self.url.replace("ws://", "http://")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "Uvicorn running on" in line:
                self.url = line.split("Uvicorn running on ")[1].split()[0].replace(
                    "http://", "ws://")
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def connect(self, **kwargs):
        import corral

        kwargs.setdefault("token", self.token)
        return corral.connect(self.url, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)


def gone(pid):
    """Whether process ``pid`` has ended (reaped, or a zombie)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def with_keeper(pid):
    """The pids of a live worker and of its keeper (on Linux), which ends a reap after it:
    wait for both before a test ends (its leftover check sees the keeper too)."""
    import psutil

    parent = psutil.Process(pid).parent()
    return [pid] + ([parent.pid] if parent.name() == "corral-keeper" else [])


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(str(tmp_path_factory.mktemp("store")), "--max-instances", "4", "--tag", "test-box",
             home=str(tmp_path_factory.mktemp("home")))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def program(host):
    """The fixture model, uploaded once."""
    with host.connect() as s:
        return s.upload(MODEL)


@pytest.fixture
def session(host):
    with host.connect() as s:
        yield s


@pytest.fixture
def model(session, program):
    with session.launch(program, target="remote_model.py:Model") as w:
        yield w
