"""Starting a worker: handshake, finding and building the target, setup and its logs."""

import os
import subprocess
import sys

import pytest

import corral
from conftest import FIXTURES, fixture_ref


def test_file_reference_builds_class_and_runs_setup_with_config():
    with corral.Worker(fixture_ref("basic:Basic"), config={"greeting": "hi"}) as w:
        assert w.call("greet", "ann") == "hi, ann"
        assert w.target_name.endswith("Basic")


def test_ready_lists_public_methods_with_kinds_and_signatures(basic):
    methods = basic.methods
    assert {"greet", "aadd", "count", "acount", "get_state"} <= set(methods)
    assert "setup" not in methods and "teardown" not in methods
    assert "_private" not in methods and "not_a_method" not in methods
    assert methods["add"].kind == "sync"
    assert methods["add"].signature == "(a: int, b: int = 1) -> int"
    assert methods["aadd"].kind == "async"
    assert methods["count"].kind == "generator" and methods["count"].streams
    assert methods["acount"].kind == "asyncgen"
    assert methods["greet"].doc == "Greet someone."


def test_setup_logs_capture_python_and_fd_level_output(basic):
    assert "setting up with hello" in basic.setup_logs
    assert "fd-level setup line" in basic.setup_logs


def test_module_reference(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("class M:\n    def predict(self, x):\n        return -x\n")
    with corral.Worker("mypkg.model:M", env={"PYTHONPATH": str(tmp_path)}) as w:
        assert w.predict(3) == -3


def test_file_reference_can_import_its_siblings(tmp_path):
    (tmp_path / "helper.py").write_text("FACTOR = 7\n")
    (tmp_path / "main.py").write_text(
        "import helper\nclass M:\n    def predict(self, x):\n        return x * helper.FACTOR\n")
    with corral.Worker(f"{tmp_path}/main.py:M") as w:
        assert w.predict(2) == 14


class LocalModel:
    def setup(self, scale: int = 1) -> None:
        self.scale = scale

    def predict(self, x: int) -> int:
        return x * self.scale


def test_local_class_is_shipped_and_built():
    with corral.Worker(LocalModel, config={"scale": 3}) as w:
        assert w.predict(5) == 15
        assert w.call("predict", 1) == 3


class Stateful:
    def __init__(self) -> None:
        self.base = 0

    def predict(self, x: int) -> int:
        return self.base + x


def test_local_instance_keeps_its_state():
    model = Stateful()
    model.base = 10
    with corral.Worker(model) as w:
        assert w.predict(2) == 12


def test_local_instance_still_runs_its_setup():
    with corral.Worker(LocalModel(), config={"scale": 4}) as w:
        assert w.predict(2) == 8


def test_local_function_and_closure():
    offset = 100

    def shift(x: int) -> int:
        return x + offset

    with corral.Worker(shift) as w:
        assert w.call("shift", 1) == 101
        assert w.predict(2) == 102  # a function is also reachable as the default method
        assert w.methods["shift"].signature == "(x: int) -> int"


def test_async_setup_runs_on_the_worker_loop(tmp_path):
    (tmp_path / "m.py").write_text(
        "import asyncio\n"
        "class M:\n"
        "    async def setup(self, value=1):\n"
        "        await asyncio.sleep(0)\n"
        "        self.value = value\n"
        "    def predict(self):\n"
        "        return self.value\n")
    with corral.Worker(f"{tmp_path}/m.py:M", config={"value": 9}) as w:
        assert w.predict() == 9


def test_setup_error_carries_logs_and_traceback():
    w = corral.Worker(fixture_ref("broken_setup:BrokenSetup"))
    with pytest.raises(corral.SetupError) as info:
        w.start()
    err = info.value
    assert "cannot load weights" in str(err)
    assert err.error_type == "builtins.ValueError"
    assert "raise ValueError" in err.remote_traceback
    assert "about to fail" in err.logs
    assert "fd output before failing" in err.logs
    assert "in setup" in err.logs
    assert w.state == "failed"
    assert w.health().status == "failed"
    with pytest.raises(corral.InvalidState):
        w.call("predict")
    w.stop()


def test_import_error_in_target_is_a_setup_error():
    with pytest.raises(corral.SetupError, match="this_module_does_not_exist"):
        corral.Worker(fixture_ref("import_error:Never")).start()


def test_config_given_to_a_target_without_setup_is_refused():
    def f():
        return 1

    with pytest.raises(corral.SetupError, match="no setup"):
        corral.Worker(f, config={"x": 1}).start()


def test_unknown_config_key_fails_setup_naming_it():
    with pytest.raises(corral.SetupError, match="colour"):
        corral.Worker(fixture_ref("basic:Basic"), config={"colour": "red"}).start()


def test_check_config_only_checks_and_builds_nothing(tmp_path):
    (tmp_path / "model.py").write_text(
        "import pathlib\n"
        "class Model:\n"
        "    def __init__(self):\n"
        f"        pathlib.Path({str(tmp_path / 'built')!r}).touch()\n"
        "    def setup(self, size: int, label: str = 'x'):\n"
        "        pass\n"
        "    def run(self):\n"
        "        return 1\n")
    ref = f"{tmp_path}/model.py:Model"
    with pytest.raises(corral.SetupError) as info:
        corral.Worker(ref, config={"size": "big", "other": 1}, check_config="only").start()
    assert {tuple(p["loc"]) for p in info.value.problems} == {("size",), ("other",)}
    with corral.Worker(ref, config={"size": "3"}, check_config="only") as w:
        assert w.methods == {}  # fits, and nothing is callable
        with pytest.raises(corral.MethodNotFound):
            w.call("run")
    assert not (tmp_path / "built").exists()  # never built
    with pytest.raises(ValueError, match="check_config"):
        corral.Worker(ref, check_config="sometimes")


@pytest.mark.parametrize("ref, match", [
    ("no_colon_here", "must look like"),
    ("/nonexistent/file.py:X", "does not exist"),
    ("corral_no_such_module_xyz:X", "no module named"),
    (f"{FIXTURES}/basic.py:Missing", "has no attribute 'Missing'"),
])
def test_bad_references_fail_clearly(ref, match):
    with pytest.raises(corral.SetupError, match=match):
        corral.Worker(ref).start()


def test_protocol_version_mismatch_fails_fast_naming_both_versions():
    fake = os.path.join(FIXTURES, "fake_python.sh")
    w = corral.Worker(fixture_ref("basic:Basic"), python=fake,
                      env={"CORRAL_TEST_REAL_PYTHON": sys.executable})
    with pytest.raises(corral.WorkerStartupError) as info:
        w.start()
    message = str(info.value)
    assert "999" in message and "9.9.9" in message
    assert corral.__version__ in message and "protocol version mismatch" in message


def test_missing_interpreter_is_a_startup_error():
    with pytest.raises(corral.WorkerStartupError, match="cannot start a worker"):
        corral.Worker(fixture_ref("basic:Basic"), python="/nonexistent/python3").start()


def test_interpreter_without_corral_says_so(tmp_path):
    env_dir = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    w = corral.Worker(fixture_ref("basic:Basic"), python=str(env_dir / "bin" / "python"))
    with pytest.raises(corral.WorkerStartupError) as info:
        w.start()
    assert "is corral importable" in str(info.value)
    assert "No module named" in info.value.stderr


def test_start_twice_is_invalid(basic):
    with pytest.raises(corral.InvalidState):
        basic.start()
