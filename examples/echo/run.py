"""Start the echo target in a worker, call it, stream from it, watch its events.

    python examples/echo/run.py
"""

import os

import corral

HERE = os.path.dirname(os.path.abspath(__file__))

with corral.Worker(f"{HERE}/echo.py:Echo", config={"prefix": "> "}) as worker:
    print("setup logs:", worker.setup_logs)
    print(worker.call("echo", "hello"))
    print(worker.call("echo", (1, {2, 3}, b"bytes")))
    for item in worker.watch("words", "streams arrive as they are produced"):
        print(" ", type(item).__name__, getattr(item, "value", ""), getattr(item, "step", ""))
