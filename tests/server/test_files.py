"""Files over HTTP: data: URLs and multipart uploads in, data: URLs and /files links out,
and every temporary file gone when its prediction ends."""

import base64
import hashlib
import os
import threading

import pytest

from conftest import fixture_ref, wait_until

from .conftest import SSE, open_gate, run_server, serving, sse_events
from .test_limits_and_access import _raw


def target(name, **kw):
    import corral

    return corral.Worker(fixture_ref(f"file_targets:{name}"), **kw)


def data_url(data, mime="application/octet-stream"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def workspaces(srv):
    """The prediction workspaces that exist now."""
    return os.listdir(srv.app.state.files.work)


# -- inputs -------------------------------------------------------------------------------

def test_a_data_url_becomes_a_file_with_its_type_and_is_removed_afterwards():
    with serving(target("Info")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"doc": data_url(b"hello", "text/plain"),
                                                   "note": "n"}})
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert out["is_file"] and out["size"] == 5 and out["sha256"] == sha(b"hello")
        assert out["content_type"] == "text/plain" and out["name"] == "input.txt"
        assert out["path"].startswith(srv.app.state.files.work)
        assert not os.path.exists(out["path"])
        assert workspaces(srv) == []
        # The record echoes the input as given (Cog does too).
        assert r.json()["input"]["doc"] == data_url(b"hello", "text/plain")
        # Percent-encoded (not base64) data URLs too.
        r = c.post("/predictions", json={"input": {"doc": "data:,a%20b"}})
        assert r.json()["output"]["sha256"] == sha(b"a b")


def test_bad_file_inputs_are_422_naming_the_field():
    with serving(target("Info")) as srv, srv.client() as c:
        for bad, words in [("data:text/plain;base64,@@@@", "base64"),
                           ("data:text/plain;base64", "data:[<type>]"),
                           ("data:nonsense;base64,aGk=", "type/subtype"),
                           ("ftp://example.com/x.png", "never read"),
                           ("/etc/passwd", "never read"),
                           ("file:///etc/passwd", "never read")]:
            r = c.post("/predictions", json={"input": {"doc": bad}})
            assert r.status_code == 422, (bad, r.text)
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["body", "input", "doc"] and words in problem["msg"], bad
        assert workspaces(srv) == []


def test_a_multipart_upload_reaches_the_worker_as_a_file_with_the_other_fields():
    with serving(target("Info")) as srv, srv.client() as c:
        r = c.post("/predictions", data={"note": "hi", "times": "3"},
                   files={"doc": ("photo.png", b"\x89PNG...", "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        out = body["output"]
        assert out["name"] == "photo.png" and out["content_type"] == "image/png"
        assert out["sha256"] == sha(b"\x89PNG...") and out["is_file"]
        assert out["note"] == "hi" and out["times"] == 3  # converted by the type hints
        assert body["input"] == {"note": "hi", "times": "3", "doc": "photo.png"}
        assert not os.path.exists(out["path"]) and workspaces(srv) == []
        # A JSON "input" part carries the rest.
        r = c.post("/predictions", files={
            "doc": ("a.txt", b"abc", "text/plain"),
            "input": (None, b'{"note": "from json", "times": 2}', "application/json")})
        assert r.json()["output"]["note"] == "from json" and r.json()["output"]["times"] == 2
        # PUT takes a form too.
        r = c.put("/predictions/up1", files={"doc": ("b.txt", b"b", "text/plain")})
        assert r.json()["id"] == "up1" and r.json()["output"]["sha256"] == sha(b"b")


def test_the_clients_filename_is_metadata_never_a_path():
    with serving(target("Info")) as srv, srv.client() as c:
        for evil in ("../../etc/passwd", "..\\..\\windows\\win.ini", "/abs/x", "..", "."):
            r = c.post("/predictions", files={"doc": (evil, b"data", "text/plain")})
            assert r.status_code == 200, (evil, r.text)
            out = r.json()["output"]
            assert out["name"] == evil  # metadata, as the client sent it
            # on disk: inside its workspace, a plain name
            rel = os.path.relpath(out["path"], srv.app.state.files.work)
            assert not rel.startswith(".."), (evil, out["path"])
            assert os.path.basename(out["path"]) not in ("", ".", "..")
            assert out["sha256"] == sha(b"data")
        assert os.path.basename(c.post("/predictions", files={
            "doc": ("../../etc/passwd", b"x")}).json()["output"]["path"]) == "passwd"


def test_path_parameters_get_paths_also_optional_and_lists():
    with serving(target("PathInfo")) as srv, srv.client() as c:
        r = c.post("/predictions", files=[("doc", ("a", b"1")), ("docs", ("b", b"22")),
                                          ("docs", ("c", b"333"))])
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert out["doc"]["is_path"] and out["doc"]["size"] == 1
        assert [d["size"] for d in out["docs"]] == [2, 3] and out["maybe"] is None
        r = c.post("/predictions", json={"input": {"doc": data_url(b"x"),
                                                   "maybe": data_url(b"yy"),
                                                   "docs": [data_url(b"zzz")]}})
        out = r.json()["output"]
        assert out["maybe"]["size"] == 2 and [d["size"] for d in out["docs"]] == [3]
        r = c.post("/predictions", json={"input": {"doc": data_url(b"x"),
                                                   "docs": [data_url(b"z"), "/etc/hosts"]}})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "input", "docs", 1]
        assert workspaces(srv) == []


def test_malformed_multipart_bodies_are_422():
    with serving(target("Info")) as srv, srv.client() as c:
        r = c.post("/predictions", content=b"--b\r\nnonsense",
                   headers={"Content-Type": "multipart/form-data"})
        assert r.status_code == 422 and "boundary" in r.json()["detail"][0]["msg"]
        r = c.post("/predictions", content=b"--b\r\nContent-Disposition: form-data; "
                   b"name=\"doc\"; filename=\"x\"\r\n\r\nabc",
                   headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 422 and "closing boundary" in r.json()["detail"][0]["msg"]
        r = c.post("/predictions", files={
            "doc": ("a", b"a"), "input": (None, b"[1]", "application/json")})
        assert r.status_code == 422 and "JSON object" in r.json()["detail"][0]["msg"]
        # a header that goes on and on (within the body limit) is cut short by
        # python-multipart (max_header_size), not collected
        r = c.post("/predictions", content=b"--b\r\nContent-Disposition: form-data; "
                   b"name=\"doc\"; filename=\"" + b"x" * 2_000_000 + b"\"\r\n\r\nabc\r\n--b--\r\n",
                   headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 422 and "header size" in r.json()["detail"][0]["msg"]
        assert workspaces(srv) == []


class PeakRss:
    """The largest RSS of this process seen while the block runs (sampled every ms)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()

    @property
    def growth(self):
        return self.peak - self.base


def test_a_64_mb_upload_streams_to_disk_without_growing_the_server(tmp_path):
    size = 64 * 1024 * 1024
    path = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            piece = bytes([i % 256]) + block[1:]
            f.write(piece)
            digest.update(piece)
    with serving(target("Info")) as srv, srv.client() as c:
        c.post("/predictions", files={"doc": ("warm", b"x")})  # first-use allocations
        with open(path, "rb") as f, PeakRss() as rss:
            # httpx streams a file object in chunks (and sends Content-Length)
            r = c.post("/predictions", files={"doc": ("big.bin", f)})
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert out["size"] == size and out["sha256"] == digest.hexdigest()
        # client and server share this process: neither held the upload
        print(f"RSS grew {rss.growth / 2**20:.1f} MiB")
        assert rss.growth < 16 * 1024 * 1024, f"RSS grew {rss.growth / 2**20:.1f} MiB"
        assert workspaces(srv) == []


def _multipart_head(url, boundary=b"XyZ", chunked=True, length=None):
    te = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % length
    return (b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n" + te + b"\r\n")


def test_an_upload_passing_the_limit_is_413_mid_stream_and_leaves_no_file():
    with serving(target("Info"), max_body_bytes=256 * 1024) as srv:
        part = (b"--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"f\"\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n")
        piece = b"x" * 65536
        chunks = [part] + [piece] * 5  # over 256 KiB, and the body never ends
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        status, answer = _raw(srv.url, _multipart_head(srv.url) + body)
        assert status.split()[1] == "413" and "passed 262144 bytes" in answer["detail"]
        wait_until(lambda: workspaces(srv) == [], 10, "the partial upload to be removed")
        # Content-Length over the limit: 413 before any byte of the body.
        status, answer = _raw(srv.url, _multipart_head(srv.url, chunked=False,
                                                       length=10**9))
        assert status.split()[1] == "413"


def test_a_client_that_leaves_mid_upload_leaves_no_file(caplog):
    import logging
    import socket

    with serving(target("Info")) as srv:
        # where uvicorn logs an unhandled exception (configured when the server starts)
        errors = logging.getLogger("uvicorn.error")
        errors.addHandler(caplog.handler)
        try:
            host, port = srv.url.removeprefix("http://").split(":")
            part = (b"--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; "
                    b"filename=\"f\"\r\n\r\n" + b"x" * 300_000)
            with socket.create_connection((host, int(port))) as s:
                s.sendall(_multipart_head(srv.url, chunked=False, length=10_000_000) + part)
                wait_until(lambda: workspaces(srv) != [], 10, "the upload to begin")
            wait_until(lambda: workspaces(srv) == [], 10, "the partial upload to be removed")
            with srv.client() as c:  # still serving
                assert c.post("/predictions", files={"doc": ("a", b"a")}).status_code == 200
        finally:
            errors.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records


def test_415_for_a_body_neither_json_nor_multipart():
    with serving(target("Info")) as srv, srv.client() as c:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "image/png"):
            r = c.post("/predictions", content=b"doc=x", headers={"Content-Type": ctype})
            assert r.status_code == 415, ctype
            assert ctype in r.json()["detail"] and "multipart/form-data" in r.json()["detail"]
        r = c.put("/predictions/p", content=b"x", headers={"Content-Type": "text/csv"})
        assert r.status_code == 415
        # JSON with a charset, and +json types, are JSON
        r = c.post("/predictions", content=b'{"input": {"doc": "data:,x"}}',
                   headers={"Content-Type": "application/json; charset=utf-8"})
        assert r.status_code == 200


def test_webhook_and_filter_of_the_wrong_type_are_422_naming_the_field():
    with serving(target("Info")) as srv, srv.client() as c:
        good = {"doc": "data:,x"}
        for field, bad in [("webhook", 3), ("webhook", {"url": "http://x"}),
                           ("webhook_events_filter", "completed"),
                           ("webhook_events_filter", [1]), ("webhook_events_filter", {})]:
            r = c.post("/predictions", json={"input": good, field: bad})
            assert r.status_code == 422, (field, bad)
            assert r.json()["detail"][0]["loc"] == ["body", field]
        assert workspaces(srv) == []


# -- cleanup after every outcome ----------------------------------------------------------

def _held_path_written(side):
    with open(side) as f:
        return f.read().endswith("\n")


def _held_path(side):
    with open(side) as f:
        return f.read().splitlines()[-1]


@pytest.mark.parametrize("outcome", ["failed", "crashed", "canceled"])
def test_the_inputs_are_removed_when_a_prediction_ends(tmp_path, fifo, outcome):
    side = str(tmp_path / "side")
    inp = {"side": side, "fifo": fifo, "crash": outcome == "crashed",
           "fail": outcome == "failed"}
    with serving(target("Held")) as srv, srv.client() as c:
        r = c.post("/predictions", data={k: str(v) for k, v in inp.items()},
                   files={"doc": ("in.txt", b"payload")}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        pid = r.json()["id"]
        # (the file exists before its line is written and flushed)
        wait_until(lambda: os.path.exists(side) and _held_path_written(side), 30,
                   "the predictor to start")
        path = _held_path(side)
        if outcome == "canceled":
            assert os.path.exists(path)  # there while it runs
            assert c.post(f"/predictions/{pid}/cancel").status_code == 200
        wait_until(lambda: c.get(f"/predictions/{pid}").json()["status"] not in
                   ("starting", "processing"), 30, "the prediction to end")
        status = c.get(f"/predictions/{pid}").json()["status"]
        assert status == {"crashed": "failed"}.get(outcome, outcome)
        assert not os.path.exists(path) and workspaces(srv) == []
        if outcome == "crashed":  # the worker restarts; then it works again
            wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 30,
                       "the restart")


def test_the_inputs_are_removed_when_the_worker_refuses_the_call():
    with serving(target("Held")) as srv, srv.client() as c:
        r = c.post("/predictions", files={"doc": ("in.txt", b"payload")})  # no "side"
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == \
            ["body", "input", "side"]
        assert workspaces(srv) == []


# -- outputs ------------------------------------------------------------------------------

def test_file_outputs_are_data_urls_by_default_also_nested(tmp_path):
    with serving(target("Make")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"size": 10, "where": str(tmp_path)}})
        expected = bytes(i % 251 for i in range(10))
        assert r.json()["output"] == data_url(expected)
        r = c.post("/predictions", json={"input": {"size": 3, "where": str(tmp_path),
                                                   "name": "o.txt", "nested": True}})
        out = r.json()["output"]
        assert out == {"files": [data_url(expected[:3], "text/plain"),
                                 data_url(expected[:3], "text/plain")], "n": 1}
        assert (tmp_path / "o.txt").exists()  # the predictor's own file: never deleted


def test_url_mode_links_to_files_served_with_type_and_name(tmp_path):
    with serving(target("Make"), file_outputs="url") as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"size": 1000, "where": str(tmp_path),
                                                   "name": "pic.png"}})
        link = r.json()["output"]
        assert link.startswith(srv.url + "/files/"), link
        got = c.get(link)
        assert got.status_code == 200
        assert got.content == bytes(i % 251 for i in range(1000))
        assert got.headers["content-type"] == "image/png"
        assert 'filename="pic.png"' in got.headers["content-disposition"]
        assert got.headers["x-content-type-options"] == "nosniff"
        assert (tmp_path / "pic.png").exists()  # copied: the original stays the predictor's
        assert c.get("/files/nope").status_code == 404


def test_outputs_over_the_inline_limit_become_links(tmp_path):
    with serving(target("Make"), file_inline_max=100) as srv, srv.client() as c:
        small = c.post("/predictions", json={"input": {"size": 100, "where": str(tmp_path)}})
        assert small.json()["output"].startswith("data:")
        big = c.post("/predictions", json={"input": {"size": 101, "where": str(tmp_path)}})
        assert big.json()["output"].startswith(srv.url + "/files/")
        assert len(c.get(big.json()["output"]).content) == 101


def test_an_output_in_the_workspace_is_moved_and_the_workspace_removed():
    with serving(target("Same"), file_outputs="url") as srv, srv.client() as c:
        r = c.post("/predictions", files={"doc": ("n.txt", b"mine", "text/plain")})
        link = r.json()["output"]
        got = c.get(link)
        assert got.content == b"mine" and got.headers["content-type"].startswith("text/plain")
        assert 'filename="n.txt"' in got.headers["content-disposition"]
        assert workspaces(srv) == []
        # the same file twice: moved once, one link
        r = c.post("/predictions", data={"twice": "true"},
                   files={"doc": ("n.txt", b"again", "text/plain")})
        first, second = r.json()["output"]
        assert first == second and c.get(first).content == b"again"


def test_an_output_file_that_does_not_exist_fails_the_prediction():
    with serving(target("Missing")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {}})
        assert r.status_code == 200
        assert r.json()["status"] == "failed"
        assert "corral-test-output.bin" in r.json()["error"]
        assert "/nonexistent" not in r.json()["error"]  # the server's paths stay its own


def test_a_symlink_in_the_workspace_is_served_as_the_file_it_points_at():
    with serving(target("Linked"), file_outputs="url") as srv, srv.client() as c:
        r = c.post("/predictions", files={"doc": ("n.txt", b"pointed at", "text/plain")})
        assert r.json()["status"] == "succeeded", r.json()
        got = c.get(r.json()["output"])  # after the workspace (and the link's target) went
        assert got.status_code == 200 and got.content == b"pointed at"
        assert workspaces(srv) == []


def test_streamed_file_chunks_arrive_as_data_urls(tmp_path):
    with serving(target("Stream")) as srv, srv.client() as c:
        with c.stream("POST", "/predictions", json={"input": {"n": 2, "where": str(tmp_path)}},
                      headers=SSE) as r:
            events = list(sse_events(r.iter_lines()))
        outputs = [d["chunk"] for e, d in events if e == "output"]  # coglet's {"chunk", "index"}
        assert outputs == [data_url(b"chunk 0", "text/plain"), data_url(b"chunk 1", "text/plain")]
        assert events[-1][0] == "completed"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_served_files_expire_after_the_retention_and_all_go_at_shutdown(tmp_path):
    from corral.server import create_app

    app = create_app(target("Make"), file_outputs="url", file_retention=60)
    store = app.state.files.store
    clock = Clock()
    store.retention.clock = clock
    assert app.state.files.root == ""  # made when the app starts, not before
    with run_server(app) as srv, srv.client() as c:
        wait_until(lambda: c.get("/health-check").json()["status"] == "READY", 60, "ready")
        root = app.state.files.root
        old = c.post("/predictions", json={"input": {"where": str(tmp_path)}}).json()["output"]
        clock.now += 59
        new = c.post("/predictions", json={"input": {"where": str(tmp_path)}}).json()["output"]
        assert c.get(old).status_code == 200
        clock.now += 2  # old is 61 s old: gone, file and all; new is 2 s old
        assert c.get(old).status_code == 404
        assert c.get(new).status_code == 200
        assert len(os.listdir(store.directory)) == 1
    assert not os.path.exists(root)


def test_files_need_the_token_like_every_other_route(tmp_path):
    token = "files-secret"
    auth = {"Authorization": f"Bearer {token}"}
    with serving(target("Make"), token=token, file_outputs="url") as srv, \
            srv.client(headers=auth) as c:
        link = c.post("/predictions", json={"input": {"where": str(tmp_path)}}).json()["output"]
        assert c.get(link).status_code == 200
        with srv.client() as anon:
            assert anon.get(link).status_code == 401


# -- review: file parameters of any shape, and one path rewritten per chunk ---------------

def test_a_server_path_is_never_read_whatever_the_shape_of_the_file_parameter(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    url = data_url(b"given", "text/plain")
    with serving(target("Shapes")) as srv, srv.client() as c:
        for name, bad, loc in [("named", {"a": str(secret)}, ["named", "a"]),
                               ("pair", [url, str(secret)], ["pair", 1]),
                               ("labelled", {"label": str(secret), "image": str(secret)},
                                ["labelled", "image"]),
                               ("grid", [[url], [str(secret)]], ["grid", 1, 0])]:
            r = c.post("/predictions", json={"input": {name: bad}})
            assert r.status_code == 422, (name, r.text)
            [problem] = r.json()["detail"]
            assert problem["loc"] == ["body", "input", *loc], (name, problem)
            assert "never read" in problem["msg"]
        # data: URLs in those places reach the worker as files
        r = c.post("/predictions", json={"input": {"named": {"a": url}, "pair": [url, url],
                                                   "labelled": {"label": "x", "image": url},
                                                   "grid": [[url, url]]}})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == {"named": {"a": "given"}, "pair": ["given", "given"],
                                      "labelled": {"label": "x", "image": "given"},
                                      "grid": [["given", "given"]]}
        assert workspaces(srv) == []


def test_a_file_rewritten_for_each_chunk_is_sent_anew_each_time(tmp_path, fifo):
    with serving(target("Frames")) as srv, srv.client() as c:
        seen = []
        with c.stream("POST", "/predictions", headers=SSE, json={"input": {
                "n": 3, "where": str(tmp_path), "gate": fifo}}) as r:
            for event, data in sse_events(r.iter_lines()):
                if event == "output":
                    seen.append(data["chunk"])
                    if len(seen) < 3:
                        open_gate(fifo)
                elif event == "completed":
                    break
        assert seen == [data_url(f"frame {i}".encode(), "text/plain") for i in range(3)]


def test_a_parameter_that_cannot_be_described_does_not_open_the_others(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    with serving(target("Undescribable")) as srv, srv.client() as c:
        r = c.post("/predictions", json={"input": {"doc": str(secret)}})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "input", "doc"]
        r = c.post("/predictions", json={"input": {"doc": data_url(b"ok", "text/plain")}})
        assert r.json()["output"] == "ok"
