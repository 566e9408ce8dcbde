"""An SSE client that reads slowly never makes the server hold a chatty model's every log
line (issue 12 item 2, the browser side): waiting log lines merge, and past the log cap
the oldest go for a marker saying how many bytes (sse.EventQueue)."""

import asyncio
import json
import re
import socket

from conftest import wait_until
from corral.server.sse import EventQueue

from .conftest import serving, worker

MARKER = re.compile(r"^\[corral: (\d+) bytes of logs dropped: the client reads too slowly\]")


def log(text, source="stdout"):
    return ("log", {"source": source, "data": text})


def drain(q):
    async def go():
        return [await q.get() for _ in range(q.qsize())]
    return asyncio.run(go())


def test_a_reader_that_keeps_up_gets_one_event_a_line():
    q = EventQueue(100)

    async def go():
        got = []
        for i in range(3):
            q.put_nowait(log(f"line {i}"))
            got.append(await q.get())
        return got
    assert asyncio.run(go()) == [log("line 0"), log("line 1"), log("line 2")]


def test_waiting_lines_merge_and_other_events_keep_their_place():
    q = EventQueue(1000)
    for item in (log("a"), log("b"), ("output", {"chunk": 1, "index": 0}), log("c"),
                 log("e", "stderr"), log("f", "stderr"), ("completed", {"status": "x"})):
        q.put_nowait(item)
    assert drain(q) == [log("a\nb"), ("output", {"chunk": 1, "index": 0}), log("c"),
                        log("e\nf", "stderr"), ("completed", {"status": "x"})]


def test_past_the_cap_the_oldest_lines_go_for_a_marker_and_the_newest_stay():
    q = EventQueue(50)
    lines = [f"{i:04d}" + "x" * 5 for i in range(100)]  # 9 characters + a newline each
    for line in lines:
        q.put_nowait(log(line))
    q.put_nowait(("completed", {}))
    [(_, first), completed] = drain(q)
    assert completed == ("completed", {})
    text = first["data"]
    match = MARKER.match(text)
    kept = text[match.end() + 1:].split("\n")
    assert kept == lines[-len(kept):] and 4 <= len(kept) <= 5  # whole lines, the newest
    assert int(match.group(1)) == sum(len(x) + 1 for x in lines[:-len(kept)])
    # More lines after a drop: the count goes on in the same marker.
    q = EventQueue(10)
    for line in lines[:3]:
        q.put_nowait(log(line))
    q.put_nowait(log(lines[3]))
    [(_, only)] = drain(q)
    assert only["data"] == f"[corral: 30 bytes of logs dropped: the client reads too " \
                           f"slowly]\n{lines[3]}"


def test_a_client_that_does_not_read_leaves_a_bounded_backlog():
    n, width, cap = 300_000, 30, 64 * 1024  # 9.3 MB of log lines
    with serving(worker("Chatty"), max_log_bytes=cap) as srv, srv.client() as c:
        body = json.dumps({"input": {"n": n, "width": width, "fd": True}}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        try:
            s.sendall(b"PUT /predictions/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            wait_until(lambda: c.get("/predictions/slow").json().get("status") == "succeeded",
                       120, "the chatty prediction to end while its SSE client sleeps")
            got = b""
            while b"event: completed" not in got:
                chunk = s.recv(1 << 20)
                assert chunk, "the server closed before the completed event"
                got += chunk
        finally:
            s.close()
    text = got.decode()
    logs = [json.loads(line[6:])["data"] for line in text.split("\n")
            if line.startswith("data: ") and '"source"' in line]
    joined = "\n".join(logs)
    assert len(text) < n * (width + 1) // 2  # most of it was never kept for this client
    assert re.search(MARKER.pattern[1:], joined)
    newest = "x" * width
    assert joined.endswith("\n" + newest)  # the newest lines arrive whole
