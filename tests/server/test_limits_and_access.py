"""The body size limit (413, early) and the structured access log."""

import json
import logging
import socket

from .conftest import serving, worker


def _raw(url, data, timeout=30):
    """Send raw bytes to the server; the status line and body of its answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0]
        while len(body) < length:
            body += s.recv(65536)
        return head.split(b"\r\n")[0].decode(), json.loads(body)


def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent():
    with serving(worker("Typed"), max_body_bytes=1000) as srv:
        # The headers promise a million bytes and none follow: the answer cannot wait.
        status, body = _raw(srv.url, b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\n"
                                     b"Content-Length: 1000000\r\n\r\n")
        assert status.split()[1] == "413"
        assert "too large" in body["detail"] and "1000 bytes" in body["detail"]
        with srv.client() as c:  # a body within the limit still works
            r = c.post("/predictions", json={"input": {"text": "a" * 500}})
            assert r.status_code == 200 and r.json()["output"] == "a" * 500


def test_a_chunked_body_is_413_once_it_passes_the_limit():
    with serving(worker("Typed"), max_body_bytes=1000) as srv:
        head = (b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 600
        # two chunks pass the limit; the body never ends (no last chunk): no answer could
        # come from waiting for it
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(2))
        status, body = _raw(srv.url, head + chunks)
        assert status.split()[1] == "413"
        assert "passed 1000 bytes" in body["detail"]
        with srv.client() as c:  # httpx sends a generator chunked; within the limit: fine
            def small():
                yield b'{"input": '
                yield b'{"text": "ok"}}'
            r = c.post("/predictions", content=small())
            assert r.status_code == 200 and r.json()["output"] == "ok"


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_each_request_is_one_json_line_on_corral_access_without_the_token():
    token = "access-log-secret"
    handler = Records()
    logger = logging.getLogger("corral.access")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with serving(worker("Typed"), token=token) as srv, \
                srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
            handler.records.clear()
            pid = c.post("/predictions?x=1", json={"input": {"text": "a"}}).json()["id"]
            c.get(f"/predictions/{pid}")
            c.get("/predictions/nope")
            with srv.client() as anon:
                assert anon.get("/metrics").status_code == 401
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    lines = [json.loads(r.getMessage()) for r in handler.records]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("POST", "/predictions", 200), ("GET", f"/predictions/{pid}", 200),
        ("GET", "/predictions/nope", 404), ("GET", "/metrics", 401)]
    assert lines[0]["prediction_id"] == pid and lines[1]["prediction_id"] == pid
    assert "prediction_id" not in lines[3]
    for e, r in zip(lines, handler.records):
        assert set(e) <= {"method", "path", "status", "duration_ms", "client",
                          "prediction_id"}
        assert e["duration_ms"] >= 0 and e["client"].startswith("127.0.0.1:")
        assert r.access == e and r.name == "corral.access"
        assert "\n" not in r.getMessage()
        assert token not in r.getMessage() and "Bearer" not in r.getMessage()


class _CountingStream:
    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass


def test_serves_own_access_handler_writes_the_lines_of_one_loop_iteration_at_once():
    """``corral serve``'s handler (access.Lines): the same JSON lines, one write per loop
    iteration; another handler on the logger gets them as LogRecords, as before."""
    import asyncio

    from corral.server import access

    logger = logging.getLogger("test.corral.access.lines")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = _CountingStream()
    logger.addHandler(access.Lines(stream))
    fields = [{"method": "GET", "path": f"/p{i}", "status": 200} for i in range(3)]

    async def three_requests():
        for f in fields:
            access.write(logger, f)
        assert stream.writes == []  # (held to the end of this iteration)
        await asyncio.sleep(0)

    asyncio.run(three_requests())
    assert len(stream.writes) == 1
    assert [json.loads(line) for line in stream.writes[0].splitlines()] == fields
    access.write(logger, fields[0])  # no loop running: written at once
    assert len(stream.writes) == 2 and json.loads(stream.writes[1]) == fields[0]

    logger.handlers[0].setLevel(logging.WARNING)  # a level on the handler is obeyed
    access.write(logger, fields[2])
    assert len(stream.writes) == 2
    logger.handlers[0].setLevel(logging.NOTSET)

    records = Records()
    logger.addHandler(records)
    try:
        access.write(logger, fields[1])
    finally:
        logger.handlers.clear()
    assert json.loads(stream.writes[2]) == fields[1]  # through logging, to both handlers
    assert records.records[0].access == fields[1]
