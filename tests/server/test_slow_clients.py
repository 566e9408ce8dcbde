"""Slow clients cannot hold the server (issue 12, item 5): many connections that send
their headers or body too slowly are answered 408 and closed within the timeout while
other clients are served; idle keep-alive connections are closed; beyond the connection
cap a new one is answered 503; oversized headers are 431. A real uvicorn on 127.0.0.1
with the server's own protocol (connections.py)."""

import socket

from conftest import wait_until

from .conftest import serving, worker

SLOW = 40  # slow connections at once (bounded, loopback)
BOUND = 20.0  # seconds any one wait may take: far above every timeout used here


def limited(**limits):
    from corral.server.connections import ConnectionLimits, server_config

    def config(app, host, port):
        return server_config(app, host, port, ConnectionLimits(**limits),
                             log_level="warning", lifespan="on")
    return config


def connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=BOUND)
    return s


def read_all(s):
    """Everything the server sends until it closes the connection."""
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


HEAD = b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def test_slow_headers_are_408_and_closed_while_others_are_served():
    with serving(worker("Typed"), config=limited(header_timeout=1.0)) as srv, \
            srv.client() as c:
        slow = [connect(srv) for _ in range(SLOW)]
        try:
            for i, s in enumerate(slow):  # half a head each: it never ends
                s.sendall(HEAD[:10 + i % 30])
            # Others are served meanwhile.
            r = c.post("/predictions", json={"input": {"text": "a"}})
            assert r.status_code == 200 and r.json()["output"] == "a"
            for s in slow:
                answer = read_all(s)  # returns: the server closed it
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        finally:
            for s in slow:
                s.close()
        # A connection that sends nothing at all is closed too.
        with connect(srv) as s:
            assert read_all(s).startswith(b"HTTP/1.1 408 ")
        assert c.get("/health-check").status_code == 200


def test_a_stalled_body_is_408_and_closed():
    with serving(worker("Typed"), config=limited(body_timeout=1.0)) as srv, \
            srv.client() as c:
        stalled = [connect(srv) for _ in range(10)]
        try:
            for s in stalled:
                s.sendall(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"input": ')
            assert c.post("/predictions", json={"input": {"text": "b"}}).json()["output"] \
                == "b"
            for s in stalled:
                answer = read_all(s)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert b"body" in answer
        finally:
            for s in stalled:
                s.close()
        assert srv.app.state.predictions.records.keys().__len__() == 1


def test_an_idle_keep_alive_connection_is_closed():
    with serving(worker("Typed"), config=limited(keep_alive_timeout=1.0)) as srv, \
            connect(srv) as s:
        body = b'{"input": {"text": "k"}}'
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = read_all(s)  # answered, then closed once idle for the timeout
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"output":"k"' in answer


def test_beyond_max_connections_a_new_one_is_503_and_the_others_still_work():
    with serving(worker("Typed"), config=limited(max_connections=5, header_timeout=60.0)) \
            as srv:
        held = [connect(srv) for _ in range(5)]
        try:
            for s in held:
                s.sendall(b"GET /health-check HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200 ")  # (kept alive)
            with connect(srv) as extra:
                assert read_all(extra).startswith(b"HTTP/1.1 503 ")
            # A held one is still served.
            held[0].sendall(b"GET /health-check HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        finally:
            for s in held:
                s.close()

        def served():
            with connect(srv) as s:
                s.sendall(b"GET /health-check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                return read_all(s).startswith(b"HTTP/1.1 200 ")
        wait_until(served, BOUND, "a new connection to be served once the others closed")


def test_headers_over_the_limit_are_431():
    with serving(worker("Typed"), config=limited(max_header_bytes=8192)) as srv, \
            srv.client() as c:
        with connect(srv) as s:
            s.sendall(HEAD + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert read_all(s).startswith(b"HTTP/1.1 431 ")
        r = c.post("/predictions", json={"input": {"text": "c"}}, headers={"X-Ok": "a" * 4000})
        assert r.status_code == 200


def test_a_body_that_keeps_coming_is_not_cut_off_and_a_later_head_is_timed_from_its_start():
    """The timers are lazy (armed once, checked when they fire): a body whose pieces come
    closer together than body_timeout is read however long it takes in all, and on a
    keep-alive connection the next request's head gets its whole header_timeout from its
    own first byte, not from the first request's timer."""
    import time

    with serving(worker("Typed"), config=limited(header_timeout=1.0, body_timeout=1.0,
                                                  keep_alive_timeout=10.0)) as srv, \
            connect(srv) as s:
        body = b'{"input": {"text": "slow body"}}'
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
        t0 = time.monotonic()
        for i in range(0, len(body), 4):  # ~2.4 s in all, 0.3 s between pieces
            s.sendall(body[i:i + 4])
            time.sleep(0.3)
        assert time.monotonic() - t0 > 2 * 1.0
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"output":"slow body"' in answer

        # A second request whose head starts 0.6 s later and never ends: its 408 comes a
        # whole header_timeout after its first byte.
        time.sleep(0.6)
        t1 = time.monotonic()
        s.sendall(HEAD[:20])
        answer = read_all(s)
        waited = time.monotonic() - t1
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert 0.95 <= waited < BOUND, waited
