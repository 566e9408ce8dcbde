"""Server processes for bench_server.py: ``python serve.py MODE PORT``.

MODE: ``sync1`` (corral.Worker, 1 slot, sync), ``async8`` (corral.Worker, 8 slots, async
predict), ``pool2`` (corral.Pool, 2 sync workers of 1 slot), ``instant`` (corral's server
with a runner that answers at once, no worker: what the server's own request handling
costs, a measuring instrument only), ``bare`` (a bare Starlette
route on uvicorn that echoes the same JSON shape: the floor, no worker process at all),
``bare_pipe`` (the same route forwarding the text to a worker process over a
``multiprocessing.Pipe`` and answering with its reply: the floor for a Python server with a
worker process), ``files_url`` (the file round trip, outputs as /files links) and
``files_data`` (the same, data: URLs both ways whatever the size).
corral's server runs as ``corral.server.serve()`` does in production (uvloop/httptools when
installed, JSON access lines on stderr)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "corral_predictors.py")


def bare(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"status": "succeeded",
                             "output": body.get("input", {}).get("text", "")})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "READY"})

    app = Starlette(routes=[Route("/predictions", predict, methods=["POST"]),
                            Route("/health-check", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def pipe_echo(conn) -> None:
    """The bare_pipe floor's worker: answer every message with itself."""
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(data)


def bare_pipe(port: int) -> None:
    import asyncio
    import collections
    import multiprocessing as mp

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=pipe_echo, args=(child,), daemon=True)
    proc.start()
    child.close()
    waiting: collections.deque = collections.deque()  # replies come back in order

    def readable() -> None:
        while conn.poll():
            waiting.popleft().set_result(conn.recv_bytes())

    watching: list = []

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        loop = asyncio.get_running_loop()
        if not watching:  # (the server's loop, on its first request)
            loop.add_reader(conn.fileno(), readable)
            watching.append(loop)
        fut = loop.create_future()
        waiting.append(fut)
        conn.send_bytes(body.get("input", {}).get("text", "").encode())
        return JSONResponse({"status": "succeeded", "output": (await fut).decode()})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "READY"})

    app = Starlette(routes=[Route("/predictions", predict, methods=["POST"]),
                            Route("/health-check", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Instant:
    """A runner whose predictions are done when submitted (no worker, no thread hop): what
    the server reads of the Runner interface (corral.host.caller), and nothing more."""

    state = "ready"
    slots = 8
    capacity = None  # never refuses
    load = 0
    target_name = "instant"

    def __init__(self) -> None:
        import types

        self.methods = {"predict": types.SimpleNamespace(streams=False)}

    def start(self) -> "Instant":
        return self

    def stop(self, grace: float | None = None) -> None:
        pass

    def describe(self) -> dict:
        return {}

    def usage(self) -> object:
        from corral.host.caller import Usage

        return Usage(busy=0, queued=0, slots=self.slots, restarts=0, ready=1)

    def options(self, **_: object) -> "Instant":
        return self

    def submit(self, method: str, **kwargs: object) -> object:
        from corral.host.calls import CallFuture

        fut = CallFuture(0, method, False)
        fut._done(kwargs.get("text", ""), 0.0)  # done at once, run_time 0
        return fut

    def asubmit(self, method: str, **kwargs: object) -> object:
        import asyncio

        from corral.host.calls import AsyncCallFuture

        fut = AsyncCallFuture(0, method, False, None, asyncio.get_running_loop())
        fut._done(kwargs.get("text", ""), 0.0)  # done at once, on the loop
        return fut


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "bare":
        return bare(port)
    if mode == "bare_pipe":
        return bare_pipe(port)
    import corral
    from corral.server import serve

    if mode == "sync1":
        runner = corral.Worker(f"{REF}:Echo")
    elif mode == "async8":
        runner = corral.Worker(f"{REF}:AsyncEcho", slots=8)
    elif mode == "instant":
        runner = Instant()
    elif mode == "pool2":
        runner = corral.Pool(f"{REF}:Echo", workers=2, slots=1)
    elif mode == "files_url":
        return serve(corral.Worker(f"{REF}:FileEcho"), host="127.0.0.1", port=port,
                     file_outputs="url")
    elif mode == "files_data":
        return serve(corral.Worker(f"{REF}:FileEcho"), host="127.0.0.1", port=port,
                     file_outputs="data", file_inline_max=1 << 30)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    serve(runner, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
