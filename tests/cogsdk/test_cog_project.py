"""cog.yaml and `corral serve`'s environment options: a Cog project served as it stands
(predict, train, concurrency.max, build.python_packages/python_requirements/python_version,
environment), --requirements, and --python with an interpreter that lacks corral."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from corral.cog.project import CogConfigError, CogProject, concurrent_max
from test_cli import _env, _free_port, _wait_ready

from .conftest import COG_VERSION, ref

PREDICT = textwrap.dedent('''\
    import os
    from cog import BasePredictor, Input

    class Predictor(BasePredictor):
        def setup(self) -> None:
            self.word = open("word.txt").read().strip()  # relative to the project

        def predict(self, name: str = Input(description="Who")) -> str:
            return f"{os.environ.get('GREETING', '?')} {name}, {self.word}"
    ''')
TRAIN = textwrap.dedent('''\
    from cog import Input

    def train(n: int = Input(ge=1)) -> str:
        return "x" * n
    ''')


def write_project(root, yaml):
    root.mkdir(exist_ok=True)
    (root / "predict.py").write_text(PREDICT)
    (root / "train.py").write_text(TRAIN)
    (root / "word.txt").write_text("friend\n")
    (root / "cog.yaml").write_text(textwrap.dedent(yaml))
    return root


@pytest.mark.parametrize("yaml, problem", [
    ("predict: predict.py\n", "predict must look like"),
    ("predict: a.py:P\nconcurrency:\n  max: 0\n", "concurrency.max"),
    ("predict: a.py:P\nbuild:\n  python_packages: cog\n", "python_packages"),
    ("predict: a.py:P\nenvironment: [NOEQUALS]\n", "environment"),
    ("- a\n- b\n", "mapping"),
])
def test_a_bad_cog_yaml_names_the_key(tmp_path, yaml, problem):
    (tmp_path / "cog.yaml").write_text(yaml)
    with pytest.raises(CogConfigError, match=problem):
        CogProject.find(str(tmp_path))


def test_cog_yaml_is_read_and_unsupported_keys_are_named(tmp_path):
    (tmp_path / "reqs.txt").write_text("numpy>=1\n")
    write_project(tmp_path, '''\
        build:
          python_version: "3.11"
          python_packages: ["cog==0.23.1"]
          python_requirements: reqs.txt
          system_packages: [ffmpeg]
          gpu: true
          run: ["echo hi"]
        predict: "predict.py:Predictor"
        train: "train.py:train"
        concurrency:
          max: 3
        environment: ["GREETING=hey", "EMPTY="]
        ''')
    p = CogProject.find(str(tmp_path / "cog.yaml"))
    assert p.target() == f"{tmp_path}/predict.py:Predictor"
    assert p.target(train=True) == f"{tmp_path}/train.py:train"
    assert p.concurrency == 3 and p.python_version == "3.11"
    assert p.requirements() == ["cog==0.23.1", "numpy>=1"]
    assert p.environment == {"GREETING": "hey", "EMPTY": ""}
    assert [u.split(" ")[0] for u in p.unsupported] == ["build.system_packages", "build.gpu",
                                                        "build.run"]
    assert CogProject.find(f"{tmp_path}/predict.py:Predictor") is None
    (tmp_path / "cog.yaml").write_text("predict: predict.py:Predictor\n")
    # Cog's build installs cog itself, so cog.yaml never lists it: the environment gets it
    assert CogProject.find(str(tmp_path)).requirements() == [f"cog=={COG_VERSION}"]


def test_concurrent_max_is_read_from_the_source():
    assert concurrent_max(ref("concurrency:Predictor")) == 4
    assert concurrent_max(ref("inputs:Predictor")) is None
    assert concurrent_max(ref("nope:Predictor")) is None


@contextlib.contextmanager
def serving_cli(*args, cwd, **env):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "corral", "serve", *args, "--port",
                             str(port)], cwd=cwd, env=_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base, timeout=180)
        yield base, proc
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_a_cog_project_from_its_folder(tmp_path, cog_env):
    import httpx

    project = write_project(tmp_path / "proj", '''\
        build:
          system_packages: [ffmpeg]
        predict: "predict.py:Predictor"
        train: "train.py:train"
        concurrency:
          max: 2
        environment: ["GREETING=hey"]
        ''')
    with serving_cli(cwd=project) as (base, proc):
        r = httpx.post(f"{base}/predictions", json={"input": {"name": "ana"}}, timeout=60)
        assert r.json()["output"] == "hey ana, friend"
        health = httpx.get(f"{base}/metrics", timeout=10).text
        assert "corral_slots 2.0" in health
    out = proc.stdout.read()
    assert out.count("build.system_packages is not applied by corral") == 1
    with serving_cli(str(project / "cog.yaml"), "--train", cwd=tmp_path) as (base, proc):
        r = httpx.post(f"{base}/trainings", json={"input": {"n": 3}}, timeout=60)
        assert r.json()["output"] == "xxx"


def test_serve_with_a_requirements_file(tmp_path, cog_env):
    import httpx

    (tmp_path / "requirements.txt").write_text(f"cog=={COG_VERSION}\n")
    with serving_cli(ref("runner:Runner"), "--requirements", "requirements.txt",
                     cwd=tmp_path) as (base, proc):
        r = httpx.post(f"{base}/predictions", json={"input": {"name": "z"}}, timeout=60)
        assert r.json()["output"] == "hi z for nobody"


@pytest.fixture(scope="module")
def cog_venv_without_corral(tmp_path_factory):
    """A plain venv with cog in it and neither corral nor its link (as a user's own)."""
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
    venv = tmp_path_factory.mktemp("usercog") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "-q", "--python", python, f"cog=={COG_VERSION}"],
                   check=True)
    assert subprocess.run([python, "-c", "import corral"], capture_output=True).returncode != 0
    return python


def test_serve_on_an_interpreter_that_lacks_corral(tmp_path, cog_venv_without_corral):
    import httpx

    with serving_cli(ref("streaming:Predictor"), "--python", cog_venv_without_corral,
                     cwd=tmp_path, CORRAL_HOME=str(tmp_path / "home")) as (base, proc):
        r = httpx.post(f"{base}/predictions", json={"input": {"n": 2}}, timeout=60)
        assert r.json()["output"] == ["tok0 ", "tok1 "]
    overlays = os.listdir(tmp_path / "home" / "envs" / "overlays")
    assert len(overlays) == 1 and not overlays[0].startswith(".")
