"""The ``corral`` command, run for real: ``python -m corral ...`` in a subprocess."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, HERE

SRC = os.path.join(os.path.dirname(HERE), "src")
TARGETS = os.path.join(FIXTURES, "cli_targets.py")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [SRC, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("CORRAL_TOKEN", None)
    env.update(extra)
    return env


def corral(*args, timeout=60, **env):
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True,
                          text=True, env=_env(**env), timeout=timeout)


@contextlib.contextmanager
def spawned(*args, **popen):
    """``python -m corral ARGS`` running (text pipes for stdout and stderr unless
    ``popen`` says otherwise), killed on the way out if it is still running."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    proc = subprocess.Popen([sys.executable, "-m", "corral", *args], env=_env(), **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def open_gate(path):
    with open(path, "w") as f:
        f.write("go")


def target(name):
    return f"{TARGETS}:{name}"


def test_inputs_are_converted_by_the_type_hints(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("from a file\n")
    r = corral("predict", target("Typed"), "-i", "n=3", "-i", "scale=2.5", "-i", "loud=true",
               "-i", 'tags=["a","b"]', "-i", "name=42", "-i", f"doc=@{doc}", "-i",
               'opts={"k": 1}', "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"n": 3, "scale": 2.5, "loud": True, "tags": ["a", "b"], "name": "42",
                   "level": 5, "opts": {"k": 1}, "types": ["int", "float", "bool"],
                   "doc": "from a file\n"}


def test_at_file_gives_its_text_to_non_path_inputs(tmp_path):
    (tmp_path / "tags.json").write_text('["x", "y"]\n')
    (tmp_path / "name.txt").write_text("Ada\n")
    r = corral("predict", target("Typed"), "-i", "n=1", "-i", f"tags=@{tmp_path}/tags.json",
               "-i", f"name=@{tmp_path}/name.txt", "-i", "level=@@x", "--json")
    assert r.returncode == 2, r.stderr  # @@x is the literal "@x": not an int
    assert "level:" in r.stderr
    r = corral("predict", target("Typed"), "-i", "n=1", "-i", f"tags=@{tmp_path}/tags.json",
               "-i", f"name=@{tmp_path}/name.txt", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tags"] == ["x", "y"] and out["name"] == "Ada\n"


def test_text_output_prints_as_it_is_and_bytes_raw_or_as_a_data_url():
    r = corral("predict", target("Typed"), "--method", "greet", "-i", "text=you")
    assert (r.returncode, r.stdout) == (0, "hello you\n"), r.stderr
    r = subprocess.run([sys.executable, "-m", "corral", "predict", target("Typed"), "-m",
                        "raw", "-i", "text=hi"], capture_output=True, env=_env(), timeout=60)
    assert (r.returncode, r.stdout) == (0, b"hi"), r.stderr
    r = corral("predict", target("Typed"), "-m", "raw", "-i", "text=hi", "--json")
    assert json.loads(r.stdout) == "data:application/octet-stream;base64,aGk="


def test_every_bad_unknown_and_missing_input_is_listed_with_exit_status_2():
    r = corral("predict", target("Typed"), "-i", "scale=wide", "-i", "level=11", "-i",
               "loud=maybe", "-i", "bogus=1", "-i", "tags=notjson")
    assert r.returncode == 2
    assert r.stdout == ""
    err = r.stderr
    assert "invalid inputs for predict" in err
    for line in ("n: required input is missing", "bogus: unexpected input",
                 "scale: Expected `float`", "loud: Expected `bool`", "level: Expected `int` <= 10",
                 "tags: Expected `array`"):
        assert line in err, err
    assert "Traceback" not in err


def test_local_problems_are_listed_together_with_exit_status_2(tmp_path):
    r = corral("predict", target("Typed"), "-i", f"doc=@{tmp_path}/missing.txt", "-i",
               "novalue", "-i", "other=1")
    assert r.returncode == 2
    for line in ("doc: no such file", "novalue: expected key=value",
                 "other: unexpected input", "n: required input is missing"):
        assert line in r.stderr, r.stderr


def test_an_unknown_method_or_target_is_a_usage_error():
    r = corral("predict", target("Typed"), "--method", "nope")
    assert r.returncode == 2 and "no method 'nope'" in r.stderr and "greet" in r.stderr
    r = corral("predict", target("Missing"))
    assert r.returncode == 2 and "cannot load" in r.stderr
    r = corral("predict")
    assert r.returncode == 2 and "TARGET" in r.stderr


def test_a_failing_prediction_prints_the_remote_error_and_exits_1():
    r = corral("predict", target("Fails"), "-i", "x=4")
    assert r.returncode == 1
    assert "ValueError: bad x: 4" in r.stderr
    assert 'raise ValueError(f"bad x: {x}")' in r.stderr  # the remote traceback
    assert r.stdout == ""


def test_a_timeout_stops_the_prediction_with_exit_1():
    r = corral("predict", target("Stream"), "-i", "n=2", "-i", "delay=30", "--timeout", "0.5")
    assert r.returncode == 1 and "timed out" in r.stderr, r.stderr


def test_a_generator_streams_chunks_as_they_come_with_logs_and_progress(tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with spawned("predict", target("Stream"), "-i", "n=3", "-i", f"gate={gate}") as proc:
        # The first chunk arrives while the generator waits for us: streamed, not buffered.
        assert proc.stdout.readline() == "tok0\n"
        open_gate(gate)
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert rest == "tok1\ntok2\n"
    logs = [line for line in err.splitlines() if line.startswith("log ")]
    assert logs == ["log 0", "log 1", "log 2"]
    assert "3/3" in err  # the progress bar's last state


def test_json_gives_a_generators_chunks_as_json_lines_as_they_come(tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with spawned("predict", target("Stream"), "-i", "n=2", "-i", f"gate={gate}",
                 "--json") as proc:
        assert json.loads(proc.stdout.readline()) == "tok0"  # before the generator goes on
        open_gate(gate)
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in rest.splitlines()] == ["tok1"]


def test_at_path_sends_a_file_to_a_file_parameter(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("file body")
    r = corral("predict", target("Typed"), "-m", "file_info", "-i", f"doc=@{doc}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"is_file": True, "name": "notes.txt", "text": "file body"}


def test_schema_prints_inputs_and_outputs():
    r = corral("schema", target("Typed"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"predict", "greet", "raw", "file_info"}
    props = out["predict"]["input"]["properties"]
    assert props["level"] == {"type": "integer", "minimum": 0, "maximum": 10, "default": 5}
    assert out["predict"]["input"]["required"] == ["n"]
    r = corral("schema", target("Typed"), "--method", "greet")
    assert json.loads(r.stdout) == {
        "input": {"title": "Input", "type": "object",
                  "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "output": {"type": "string"}}
    r = corral("schema", target("Typed"), "--method", "nope")
    assert r.returncode == 2


def test_help_everywhere_and_version():
    for args in ([], ["predict"], ["schema"], ["serve"]):
        r = corral(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert "Example" in r.stdout
    r = corral("--version")
    assert r.returncode == 0 and r.stdout.startswith("corral, version ")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_predictions_and_stops_on_sigterm(tmp_path):
    import httpx

    port = _free_port()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with spawned("serve", target("Typed"), "--port", str(port), "--token-file",
                 str(token_file), stderr=subprocess.STDOUT) as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base)
        r = httpx.post(f"{base}/predictions", json={"input": {"n": "2"}}, timeout=30)
        assert r.status_code == 401
        r = httpx.post(f"{base}/predictions", json={"input": {"n": 2, "tags": ["t"]}},
                       headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "succeeded"
        assert body["output"]["n"] == 2 and body["output"]["tags"] == ["t"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "s3cret" not in out


def _wait_ready(proc, base: str, timeout: float = 60.0) -> None:
    """Poll /health-check until READY (a server in a subprocess has no event to wait on),
    failing at once with its output if it exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{base}/health-check", timeout=2).json()["status"] == "READY":
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)


def test_serve_beyond_loopback_without_a_token_exits_2():
    r = corral("serve", target("Typed"), "--host", "0.0.0.0", "--port", str(_free_port()))
    assert r.returncode == 2
    assert "refusing to serve on '0.0.0.0' without a token" in r.stderr


def test_serve_takes_uploads_and_links_file_outputs_with_file_outputs_url(tmp_path):
    import httpx

    port = _free_port()
    files_target = os.path.join(os.path.dirname(TARGETS), "file_targets.py") + ":Make"
    with spawned("serve", files_target, "--port", str(port), "--file-outputs", "url",
                 stderr=subprocess.STDOUT) as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base)
        # form fields are inputs too
        r = httpx.post(f"{base}/predictions", data={"size": "5", "where": str(tmp_path)},
                       files={"unused": ("x", b"")}, timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "unused"
        r = httpx.post(f"{base}/predictions", files={"size": (None, "5"),
                                                     "where": (None, str(tmp_path))},
                       timeout=30)
        link = r.json()["output"]
        assert link.startswith(f"{base}/files/"), r.text
        assert httpx.get(link, timeout=30).content == bytes(range(5))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


@pytest.mark.parametrize("args", [["--slots", "0"], ["--port", "-1"], ["--workers", "x"],
                                  ["--file-outputs", "ftp"]])
def test_serve_rejects_bad_options(args):
    r = corral("serve", target("Typed"), *args)
    assert r.returncode == 2
