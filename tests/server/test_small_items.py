"""Smaller hardening items (issue 12, item 8) against a real server: the bearer token never
reaches the worker's environment, prediction ids are bounded, data: URL media types are
type/subtype tokens."""

import signal
import subprocess

from conftest import fixture_ref

from .conftest import serving, worker


def test_the_token_is_not_in_the_workers_environment(monkeypatch):
    monkeypatch.setenv("CORRAL_TOKEN", "env-token-value")
    auth = {"Authorization": "Bearer env-token-value"}
    with serving(worker("Env"), token="env-token-value") as srv, \
            srv.client(headers=auth) as c:
        r = c.post("/predictions", json={"input": {"name": "CORRAL_TOKEN"}})
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
        assert r.json()["output"] is None
        r = c.post("/predictions", json={"input": {"name": "HOME"}})
        assert r.json()["output"] is not None  # (the rest of the environment is there)


def test_corral_serve_keeps_the_token_from_its_workers():
    import sys

    import httpx

    from test_cli import _env, _free_port, _wait_ready

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve",
                             fixture_ref("cogish:Env"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(CORRAL_TOKEN="cli-env-token"))
    try:
        _wait_ready(proc, base)
        r = httpx.post(f"{base}/predictions", json={"input": {"name": "CORRAL_TOKEN"}},
                       headers={"Authorization": "Bearer cli-env-token"}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["output"] is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out


def test_prediction_ids_longer_than_256_are_422():
    with serving(worker("Typed")) as srv, srv.client() as c:
        long_id = "x" * 257
        r = c.post("/predictions", json={"id": long_id, "input": {"text": "a"}})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "id"]
        r = c.put("/predictions/" + long_id, json={"input": {"text": "a"}})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["path", "prediction_id"]
        assert srv.app.state.predictions.records == {}
        ok = "y" * 256
        assert c.put("/predictions/" + ok, json={"input": {"text": "a"}}).json()["id"] == ok


def test_data_url_media_types_must_be_type_subtype_tokens():
    with serving(worker_files("Info")) as srv, srv.client() as c:
        for mime in ("text/plain\r\nX-Evil: 1", "a/b/c", "text/", "/plain", "te xt/plain",
                     'text/"html"', "text/plain\x00"):
            r = c.post("/predictions", json={"input": {"doc": f"data:{mime};base64,aGk="}})
            assert r.status_code == 422, (mime, r.text)
            assert "type/subtype" in r.json()["detail"][0]["msg"]
        r = c.post("/predictions", json={"input": {"doc": "data:application/vnd.a+json;"
                                                          "base64,aGk="}})
        assert r.status_code == 200 and r.json()["output"]["content_type"] == \
            "application/vnd.a+json"


def worker_files(name):
    import corral

    return corral.Worker(fixture_ref(f"file_targets:{name}"))


def test_corral_serve_refuses_a_malformed_webhook_allow_and_lists_the_new_flags():
    from test_cli import corral

    r = corral("serve", fixture_ref("cogish:Typed"), "--webhook-allow", "127.0.0.0/8,nope")
    assert r.returncode == 2 and "--webhook-allow" in r.stderr and "'nope'" in r.stderr
    help_text = corral("serve", "--help").stdout
    for flag in ("--webhook-allow", "--allowed-host", "--allowed-origin", "--allow-shutdown",
                 "--public-url", "--max-log-bytes", "--webhook-throttle", "--header-timeout",
                 "--body-timeout", "--keep-alive-timeout", "--max-connections"):
        assert flag in help_text, flag
