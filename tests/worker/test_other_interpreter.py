"""A worker in another environment that has nothing but msgspec (as a plugin's may)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import corral

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "src")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "msgspec"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return python


def test_worker_runs_in_an_environment_with_only_msgspec(bare_python, tmp_path):
    (tmp_path / "model.py").write_text(
        "import sys\n"
        "class Model:\n"
        "    def where(self):\n"
        "        return sys.executable, sorted(m for m in ('numpy', 'cloudpickle') "
        "if m in sys.modules)\n"
        "    def add(self, a, b):\n"
        "        return a + b\n")
    with corral.Worker(f"{tmp_path}/model.py:Model", python=bare_python,
                       env={"PYTHONPATH": SRC}) as w:
        executable, heavy = w.call("where")
        assert executable == bare_python and heavy == []
        assert w.call("add", (1,), (2,)) == (1, 2)
        # numpy is not there: an array argument fails that call, clearly, not the worker.
        with pytest.raises(corral.RemoteError, match="numpy"):
            w.call("add", np.zeros(2), np.zeros(2))
        assert w.call("add", 1, 2) == 3
