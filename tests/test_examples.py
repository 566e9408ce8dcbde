"""The examples in the README run end to end."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(path: str) -> str:
    done = subprocess.run([sys.executable, os.path.join(ROOT, path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_numeric_example_fits_and_streams():
    out = _run("examples/numeric/run.py")
    assert "R^2 on fresh data: 0.99" in out
    assert out.count("epoch ") == 8
    assert "coef float64 (16,)" in out


def test_echo_example():
    out = _run("examples/echo/run.py")
    assert "> hello" in out
    assert "(1, {2, 3}, b'bytes')" in out
    assert "Done" in out
