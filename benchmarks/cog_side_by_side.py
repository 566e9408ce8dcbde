"""The same Cog predictors under coglet and under `corral serve`, side by side.

    .venv/bin/python benchmarks/cog_side_by_side.py            # writes results/cog_side_by_side.{md,json}
    .venv/bin/python benchmarks/cog_side_by_side.py --smoke    # corral only (no coglet needed)

coglet comes from its own venv (``$COGLET_PYTHON`` or ``/tmp/coglet-venv/bin/python``:
``python -m venv /tmp/coglet-venv && /tmp/coglet-venv/bin/pip install coglet cog==0.23.1``).
Each predictor of tests/cogsdk/predictors/ is copied to a folder of its own with the
``.cog/openapi_schema.json`` that ``cog build`` would write (benchmarks/cog_schema.py, cog's
own inspector) and served by coglet (``python -m cog.server.http``) and by corral, whose
worker runs on the same venv's interpreter (``corral serve REF --python``: that venv has
cog but no corral). Every request goes to both; a row compares what a client sees: the
HTTP status, the prediction's status, its output (files compared by their bytes), its
error text, its metrics; for a 422 the input fields named; for SSE the event names and
their output chunks. Which differences are deliberate is said in docs/cog.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common as c  # noqa: E402
from bench_server import coglet_python, free_port  # noqa: E402

PREDICTORS = os.path.join(ROOT, "tests", "cogsdk", "predictors")
PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()
DATA = f"data:image/png;base64,{PNG}"
TXT = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
SSE = {"Accept": "text/event-stream"}

# predictor reference (file:Name), train mode, concurrency, [(label, method, path, body, headers)]
CASES: list[tuple[str, bool, int, list[tuple[str, str, str, Any, dict]]]] = [
    ("inputs.py:Predictor", False, 1, [
        ("valid, defaults", "POST", "/predictions", {"input": {"prompt": "cat", "seed": 3}}, {}),
        ("every option set", "POST", "/predictions", {"input": {
            "prompt": "dog", "seed": 1, "steps": 50, "scale": 0, "mode": "slow",
            "tag": "abcde", "legacy": True}}, {}),
        ("string to int/float", "POST", "/predictions",
         {"input": {"prompt": "x", "seed": "5", "scale": "2.5"}}, {}),
        ("unknown key dropped", "POST", "/predictions",
         {"input": {"prompt": "x", "seed": 1, "nonsense": 2}}, {}),
        ("out of range, bad choice", "POST", "/predictions",
         {"input": {"steps": 99, "mode": "x", "tag": "A"}}, {}),
        ("wrong type", "POST", "/predictions", {"input": {"prompt": 3, "seed": "x"}}, {}),
    ]),
    ("runner.py:Runner", False, 1, [
        ("run() with context and metrics", "POST", "/predictions",
         {"input": {"name": "bo", "times": 2}, "context": {"user": "ana"}}, {}),
        ("no context", "POST", "/predictions", {"input": {"name": "x"}}, {}),
    ]),
    ("plain_class.py:Plain", False, 1, [
        ("plain class, list output", "POST", "/predictions", {"input": {"n": 3}}, {}),
        ("ge violated", "POST", "/predictions", {"input": {"n": -1}}, {}),
    ]),
    ("plain_class.py:run", False, 1, [
        ("function predictor", "POST", "/predictions", {"input": {"text": "abc", "upper": True}},
         {}),
        ("missing required", "POST", "/predictions", {"input": {}}, {}),
    ]),
    ("plain_class.py:fails", False, 1, [
        ("ValueError in predict", "POST", "/predictions", {"input": {"mode": "value"}}, {}),
        ("RuntimeError in predict", "POST", "/predictions", {"input": {"mode": "x"}}, {}),
    ]),
    ("files.py:Predictor", False, 1, [
        ("Path in, BaseModel with Path out", "POST", "/predictions", {"input": {"image": DATA}},
         {}),
        ("File and list[Path] in", "POST", "/predictions",
         {"input": {"image": DATA, "blob": TXT, "more": [DATA, TXT]}}, {}),
    ]),
    ("files.py:many", False, 1, [
        ("list[Path] out", "POST", "/predictions", {"input": {"paths": [DATA, TXT]}}, {}),
    ]),
    ("secret.py:Predictor", False, 1, [
        ("Secret in", "POST", "/predictions", {"input": {"token": "s3cret"}}, {}),
    ]),
    ("streaming.py:Predictor", False, 1, [
        ("ConcatenateIterator", "POST", "/predictions", {"input": {"n": 3}}, {}),
        ("ConcatenateIterator over SSE", "POST", "/predictions", {"input": {"n": 2}}, SSE),
    ]),
    ("streaming.py:Counter", False, 1, [
        ("Iterator[int]", "POST", "/predictions", {"input": {"n": 3}}, {}),
    ]),
    ("streaming.py:AsyncTokens", False, 1, [
        ("async iterator", "POST", "/predictions", {"input": {"n": 2}}, {}),
    ]),
    ("streaming.py:Frames", False, 1, [
        ("Iterator[Path]", "POST", "/predictions", {"input": {"n": 2}}, {}),
        ("Iterator[Path] over SSE", "POST", "/predictions", {"input": {"n": 1}}, SSE),
    ]),
    ("streaming.py:Failing", False, 1, [
        ("error mid-stream", "POST", "/predictions", {"input": {"at": 1}}, {}),
    ]),
    ("optional_union.py:Predictor", False, 1, [
        ("Optional omitted", "POST", "/predictions", {"input": {}}, {}),
        ("union keeps an int", "POST", "/predictions", {"input": {"either": 1}}, {}),
        ("union float", "POST", "/predictions", {"input": {"either": 1.5, "value": "v"}}, {}),
        ("union rejects a bool", "POST", "/predictions", {"input": {"either": True}}, {}),
        ("explicit null", "POST", "/predictions", {"input": {"value": None}}, {}),
        ("Optional ge violated", "POST", "/predictions", {"input": {"count": -1}}, {}),
    ]),
    ("concurrency.py:Predictor", False, 4, [
        ("async @concurrent", "POST", "/predictions", {"input": {"gate": "OPEN", "i": 7}}, {}),
    ]),
    ("train.py:train", True, 1, [
        ("train() under /trainings", "POST", "/trainings", {"input": {"n": 4}}, {}),
        ("train input checked", "POST", "/trainings", {"input": {"n": 0}}, {}),
    ]),
]


# -- servers ----------------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen, base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{base}/health-check", timeout=2).json().get("status") == "READY":
                return
        time.sleep(0.05)
    raise RuntimeError(f"{base} not READY after {timeout} s")


@contextlib.contextmanager
def running(argv: list[str], cwd: str, env: dict[str, str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers included
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def coglet(py: str, folder: str, ref: str, train: bool, slots: int) -> Any:
    subprocess.run([py, os.path.join(HERE, "cog_schema.py"), folder, ref]
                   + (["--train"] if train else []), check=True, capture_output=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PORT=str(port), COG_MAX_CONCURRENCY=str(slots),
               PATH=os.path.dirname(py) + os.pathsep + env.get("PATH", ""))
    env["COG_TRAIN_TYPE_STUB" if train else "COG_PREDICT_TYPE_STUB"] = ref
    argv = [py, "-m", "cog.server.http", "--host", "127.0.0.1"] + (
        ["--x-mode", "train"] if train else [])
    return running(argv, folder, env, port)


def corral(py: str, folder: str, ref: str, train: bool, slots: int) -> Any:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    argv = [sys.executable, "-m", "corral", "serve", f"{folder}/{ref}", "--port", str(port),
            "--slots", str(slots), "--python", py] + (["--train"] if train else [])
    return running(argv, folder, env, port)


# -- what a client sees -----------------------------------------------------------------------


def _files(value: Any) -> Any:
    """Outputs with every data: URL replaced by its bytes (coglet and corral may name the
    media type differently: the content is what counts)."""
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value:
        return "file:" + base64.b64decode(value.split(",", 1)[1]).decode("latin-1")
    if isinstance(value, list):
        return [_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _files(v) for k, v in value.items()}
    return value


def seen(base: str, method: str, path: str, body: Any, headers: dict, gate: str) -> dict:
    body = json.loads(json.dumps(body).replace('"OPEN"', json.dumps(gate)))
    if headers.get("Accept") == "text/event-stream":
        events = []
        with httpx.stream(method, base + path, json=body, headers=headers, timeout=60) as r:
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    events.append([name, _files(data) if name == "output" else None])
        return {"http": r.status_code, "events": events}
    r = httpx.request(method, base + path, json=body, headers=headers, timeout=60)
    out: dict[str, Any] = {"http": r.status_code}
    data = r.json()
    if r.status_code == 422:
        out["invalid"] = sorted({p["loc"][-1] for p in data.get("detail", [])})
        return out
    out["status"] = data.get("status")
    out["output"] = _files(data.get("output"))
    if data.get("error"):
        out["error"] = data["error"]
    metrics = {k: v for k, v in (data.get("metrics") or {}).items() if k != "predict_time"}
    if metrics:
        out["metrics"] = metrics
    return out


def short(result: dict) -> str:
    if "events" in result:
        return f"{result['http']} SSE " + " ".join(
            e if d is None else f"{e}{json.dumps(d)}" for e, d in result["events"])
    text = f"{result['http']}"
    if "invalid" in result:
        return text + " invalid: " + ", ".join(result["invalid"])
    text += f" {result.get('status')} {json.dumps(result.get('output'))}"
    if "error" in result:
        text += f" error={result['error']!r}"
    if "metrics" in result:
        text += f" metrics={json.dumps(result['metrics'], sort_keys=True)}"
    return text


def cog_env_python() -> str:
    """Without coglet's venv (the smoke run): cog from the registry in an environment of
    corral's plugin machinery, as the tests get it."""
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from corral.plugins.envs import EnvironmentCache

    return EnvironmentCache().ensure(["cog==0.23.1"]).python


def compare(py: str | None, smoke: bool) -> list[dict[str, Any]]:
    rows = []
    corral_py = py or cog_env_python()
    for ref, train, slots, requests in CASES[:2] if smoke else CASES:
        folder = tempfile.mkdtemp(prefix="cog-sbs-")
        gate = os.path.join(folder, "gate")
        os.makedirs(gate)
        open(os.path.join(gate, "open"), "w").close()
        for name in os.listdir(PREDICTORS):
            if name.endswith(".py"):
                shutil.copy(os.path.join(PREDICTORS, name), folder)
        try:
            results: dict[str, list[dict]] = {}
            sides = [("corral", corral, corral_py)] + (
                [("coglet", coglet, py)] if py and not smoke else [])
            for side, start, python in sides:
                print(f"[cog_side_by_side] {side} {ref}", file=sys.stderr, flush=True)
                with start(python, folder, ref, train, slots) as base:
                    results[side] = [seen(base, m, p, b, h, gate) for _, m, p, b, h in requests]
            for i, (label, *_rest) in enumerate(requests):
                mine = results["corral"][i]
                theirs = results.get("coglet", [None] * len(requests))[i]
                rows.append({"predictor": ref, "request": label,
                             "coglet": None if theirs is None else short(theirs),
                             "corral": short(mine),
                             "same": None if theirs is None else mine == theirs})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| predictor | request | coglet | corral | same? |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        same = "-" if r["same"] is None else ("yes" if r["same"] else "**no**")
        cells = [r["predictor"], r["request"], r["coglet"] or "-", r["corral"], same]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args, _, out_dir = c.command_line(__doc__, "cog_side_by_side.json and .md", {}, {})
    py = coglet_python()
    if py is None and not args.smoke:
        sys.exit("coglet not found: set COGLET_PYTHON or make /tmp/coglet-venv (see above)")
    rows = compare(py, args.smoke)
    text = table(rows)
    print(text)
    total = [r for r in rows if r["same"] is not None]
    same = sum(r["same"] for r in total)
    head = (f"# Cog predictors under coglet and corral\n\n{same} of {len(total)} requests "
            "answered the same (HTTP status, status, output, error text, metrics; for a 422 "
            "the fields named; for SSE the events).\n\n" if total else
            "# Cog predictors under corral (smoke: coglet not run)\n\n")
    with open(os.path.join(out_dir, "cog_side_by_side.md"), "w") as f:
        f.write(head + "Rerun: `.venv/bin/python benchmarks/cog_side_by_side.py` (coglet "
                "0.23.1 in /tmp/coglet-venv). Deliberate differences: docs/cog.md.\n\n"
                + text + "\n")
    with open(os.path.join(out_dir, "cog_side_by_side.json"), "w") as f:
        json.dump({"machine": c.machine_info(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
