"""uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a thread of the test process:
the real server the HTTP tests talk to with an httpx client."""

import contextlib
import threading

import httpx

from conftest import wait_until


class Running:
    def __init__(self, server, thread, app):
        self.server, self.thread, self.app = server, thread, app
        address, port = server.servers[0].sockets[0].getsockname()[:2]
        self.port = port
        self.url = f"http://{address}:{port}" if ":" not in address else \
            f"http://[{address}]:{port}"

    def client(self, **kw):
        return httpx.Client(base_url=self.url, timeout=30, **kw)


@contextlib.contextmanager
def run_server(app, host="127.0.0.1", config=None):
    """Serve ``app`` with uvicorn on ``host`` (a free port) in a thread; ``config``: a
    function of (app, host, port) giving the uvicorn.Config to use instead."""
    import uvicorn

    if config is not None:
        cfg = config(app, host, 0)
    else:
        cfg = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(cfg)
    app.state.set_shutdown(lambda: setattr(server, "should_exit", True))
    thread = threading.Thread(target=server.run, daemon=True, name="test-uvicorn")
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield Running(server, thread, app)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"
