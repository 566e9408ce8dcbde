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


def test_pipeline_example_fits_three_stages_and_moves_their_states():
    out = _run("examples/pipeline/run.py")
    assert "stages: standardize -> pca -> ridge" in out
    assert "R^2 on held-out rows: 1.0000" in out or "R^2 on held-out rows: 0.99" in out
    assert "a second worker with the states predicts the same: True" in out


def test_streaming_example_filters_chunks_as_they_arrive():
    out = _run("examples/streaming/run.py")
    assert "chunked result equals filtering the whole signal: True" in out
    ahead = int(out.split("the producer ran at most ")[1].split()[0])
    assert ahead <= 4 + 4 + 1  # the window each way (stream_window=4), and one in hand


def test_data_parallel_example_matches_single_process_training():
    out = _run("examples/data_parallel/run.py")
    assert "replicas identical: True" in out
    assert "matches single-process training to 1e-6: True" in out


def test_ci_runs_exactly_the_readme_test_command():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(commands) == 2 and commands[1].endswith(".venv/bin/python -m pytest -q")
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == commands[1]


def test_ray_example_runs_a_pool_on_a_local_cluster():
    out = _run("examples/ray/run.py")
    assert "workers on the node tagged ['gpu']" in out
    assert "> HELLO FROM THE CLUSTER" in out
    assert "  arrive\n" in out and "norm 3162.27" in out
    assert "health ready" in out and out.endswith("done\n")
