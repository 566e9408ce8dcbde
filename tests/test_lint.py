"""ruff passes on src/, tests/, benchmarks/ and examples/ with the committed configuration (pyproject.toml):
import order, unused imports, and the checks the code's ``# noqa`` markers name."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import HERE

ROOT = os.path.dirname(HERE)


def _ruff() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "ruff")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return [found]


def test_ruff_check_passes_on_all_the_code():
    result = subprocess.run([*_ruff(), "check", "--no-cache", "src", "tests", "benchmarks",
                             "examples"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
