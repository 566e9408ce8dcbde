"""A real server for each test: uvicorn on 127.0.0.1 (a free port) in a thread, with real
worker processes behind it, and an httpx client."""

import contextlib
import json
import os

import pytest

from conftest import fixture_ref, wait_until
from http_serving import Running, run_server  # noqa: F401 - the server tests import both from here

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")


@contextlib.contextmanager
def serving(runner, wait_ready=True, config=None, **app_kwargs):
    """Serve ``runner`` (started by the app); wait until /health-check leaves STARTING.
    ``config``: as run_server's."""
    from corral.server import create_app

    app = create_app(runner, **app_kwargs)
    with run_server(app, config=config) as running:
        if wait_ready:
            with running.client() as c:
                wait_until(lambda: c.get("/health-check").json()["status"] != "STARTING",
                           60, "setup to finish")
        yield running


def worker(name, **kw):
    import corral

    return corral.Worker(fixture_ref(f"cogish:{name}"), **kw)


def pool(name, **kw):
    import corral

    return corral.Pool(fixture_ref(f"cogish:{name}"), **kw)


@pytest.fixture
def fifo(tmp_path):
    """A FIFO a gated predictor blocks on until ``open_gate`` writes to it."""
    path = tmp_path / "gate"
    os.mkfifo(path)
    return str(path)


def open_gate(path, text="go"):
    with open(path, "w") as f:
        f.write(text)


def started(side):
    if not os.path.exists(side):
        return 0
    with open(side) as f:
        return f.read().count("started")


SSE = {"Accept": "text/event-stream"}
#: Webhook receivers in the tests run on 127.0.0.1, which servers refuse unless allowed.
LOCAL_HOOKS = {"webhook_allow": ("127.0.0.0/8",)}


def until(events, name):
    """The (event, data) pairs taken from the iterator ``events`` up to and including
    the first ``name`` one; the rest stay in ``events``."""
    seen = []
    for event, data in events:
        seen.append((event, data))
        if event == name:
            break
    return seen


def sse_events(lines):
    """(event, data) pairs from an iterator of SSE lines."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


@contextlib.contextmanager
def corral_serve(*args, timeout=60):
    """``python -m corral serve ARGS --port P`` in a subprocess (P a free port); yields its
    base URL once /health-check says READY, and stops it with SIGTERM on the way out."""
    import socket
    import subprocess
    import sys

    from conftest import HERE

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(HERE), "src"), HERE])
    env.pop("CORRAL_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", *args, "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, f"corral serve exited with {proc.returncode}"
        try:
            return httpx.get(f"{base}/health-check", timeout=2).json()["status"] == "READY"
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout, "corral serve to get ready")
        yield base
    finally:
        proc.terminate()
        proc.wait(60)
